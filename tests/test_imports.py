"""The public surface of `rag` is pinned: adding or removing a name is a decision, not an accident."""

from __future__ import annotations

import subprocess
import sys

import rag

EXPECTED_ALL = [
    "Answer",
    "AnswerStream",
    "ChatSession",
    "Memory",
    "Settings",
    "Shvayambhu",
    "ShvayambhuError",
    "Source",
    "UsageError",
    "load_settings",
]


def test_all_imports() -> None:
    assert sorted(rag.__all__) == sorted(EXPECTED_ALL)
    for name in rag.__all__:
        assert getattr(rag, name) is not None, name


def test_every_user_error_shares_one_root() -> None:
    from index.embed import EmbeddingError
    from index.store import StoreError
    from ingest.pipeline import IngestError
    from ingest.readers import ReadError
    from rag.backends.base import BackendError
    from rag.config import ConfigError
    from rag.eval import BeirError, GenerationError
    from rag.synthesis import SynthesisError

    for error in (
        EmbeddingError,
        StoreError,
        IngestError,
        ReadError,
        BackendError,
        ConfigError,
        BeirError,
        GenerationError,
        SynthesisError,
    ):
        assert issubclass(error, rag.ShvayambhuError), error
    assert ConfigError.exit_code == rag.UsageError.exit_code == 2
    assert StoreError.exit_code == 1


def test_importing_is_free_of_side_effects() -> None:
    """`import rag` (and the light leaves it and the CLI rely on) loads neither mlx, chromadb nor torch."""
    code = (
        "import sys, rag, rag.cli, blt.tokens, blt.errors, ingest.records, index.errors\n"
        "heavy = [m for m in ('mlx', 'mlx.core', 'chromadb', 'torch', 'sentence_transformers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
