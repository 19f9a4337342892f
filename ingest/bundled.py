"""Where the corpus shipped inside the package lives: the seed corpus and the prompt lists for synthesis."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SEED_CORPUS = DATA_DIR / "seed.jsonl"  # 880 pairs, 44 of them marked split=heldout
PROMPTS_DIR = DATA_DIR / "prompts"  # one JSON list of prompts per category, for `shvayambhu generate`


def seed_corpus() -> list[Path]:
    """The bundled seed corpus as a list of paths (what `ingest`, `train` and `eval` take by default)."""
    return [SEED_CORPUS]
