"""Quality of the shipped BLT on the held-out prompts: chrF against the references with retrieval and
without, from the same checkpoint in the same run, plus UTF-8 validity and runaway repetition. Run:

    python bench/bench_blt_quality.py [--checkpoint DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import blt  # noqa: E402,F401  - OpenBLAS before mlx


def max_repeats(text: str, n: int = 20) -> int:
    """How often the most frequent n-byte sequence occurs in text (non-overlapping counts are not needed)."""
    data = text.encode("utf-8")
    counts = Counter(data[i : i + n] for i in range(0, max(0, len(data) - n + 1)))
    return max(counts.values(), default=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default="", help="BLT checkpoint [the shipped one]")
    ap.add_argument("--limit", type=int, default=None, help="held-out prompts to use [all]")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repetition-penalty", type=float, default=None, help="[blt] repetition_penalty")
    ap.add_argument("--no-repeat-ngram", type=int, default=None, help="[blt] no_repeat_ngram")
    ap.add_argument("--copy-weight", type=float, default=None, help="[blt] copy_weight (0: the model alone)")
    args = ap.parse_args()
    blt_section = {"checkpoint": args.checkpoint}
    if args.repetition_penalty is not None:
        blt_section["repetition_penalty"] = args.repetition_penalty
    if args.no_repeat_ngram is not None:
        blt_section["no_repeat_ngram"] = args.no_repeat_ngram
    if args.copy_weight is not None:
        blt_section["copy_weight"] = args.copy_weight

    from rag.api import Shvayambhu
    from rag.config import load_settings
    from rag.eval.generation import generation_command

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            overrides={"store": {"data_dir": tmp}, "blt": blt_section}, environ={}
        )
        Shvayambhu(settings).ingest([REPO / "ingest" / "data" / "seed.jsonl"], progress=False)
        configs = [
            f"retrieval=backend=blt,k={args.k},retrieval=on,memory=off",
            "no-retrieval=backend=blt,retrieval=off,memory=off",
        ]
        run = generation_command(
            None,
            configs=configs,
            out=Path(tmp) / "run",
            limit=args.limit,
            progress=False,
            plots=False,
            bootstrap=500,
            settings=settings,
        )
        rows = [json.loads(line) for line in (run.folder / "results.jsonl").open(encoding="utf-8")]
        summary = json.loads((run.folder / "summary.json").read_text())
    by_cfg: dict[str, list[dict]] = {}
    for r in rows:
        by_cfg.setdefault(r["config"], []).append(r)
    b = settings.blt
    print(
        f"held-out prompts: {len(by_cfg.get('retrieval', []))}; checkpoint: {args.checkpoint or 'shipped default'}; "
        f"repetition_penalty {b.repetition_penalty}, no_repeat_ngram {b.no_repeat_ngram}, copy_weight {b.copy_weight}"
    )
    chrf = {}
    for name, rs in by_cfg.items():
        answers = [r.get("answer") or "" for r in rs]
        mean_len = statistics.mean(len(a.encode()) for a in answers)
        chrf[name] = statistics.mean(r["metrics"]["chrf"] for r in rs if "chrf" in r.get("metrics", {}))
        bad_utf8 = sum("\ufffd" in a for a in answers)
        runaway = sum(max_repeats(a) > 3 for a in answers)
        empty = sum(not a.strip() for a in answers)
        leaks = sum(bool(r.get("leak")) for r in rs)
        print(
            f"{name:>13}: chrF {chrf[name]:.2f}  mean answer {mean_len:.0f} B  "
            f"invalid-UTF-8 answers {bad_utf8}  runaway repetition {runaway}  empty {empty}  self-leaks {leaks}"
        )
    if chrf.get("no-retrieval"):
        print(f"chrF ratio retrieval / no retrieval: {chrf['retrieval'] / chrf['no-retrieval']:.2f}x (target >= 2x)")
    cis = {n: c.get("metrics", {}).get("chrf") for n, c in summary.get("configs", {}).items()}
    print("bootstrap 95% CIs (chrF):", json.dumps(cis))
    example = by_cfg["retrieval"][0]
    print("\nexample prompt:", example["prompt"][:200])
    print("with retrieval:", example["answer"][:400])
    print("without:", by_cfg["no-retrieval"][0]["answer"][:400])


if __name__ == "__main__":
    main()
