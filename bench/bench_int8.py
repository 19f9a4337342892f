"""Embedding throughput, int8 vs fp32 (ONNX Runtime, CPU), on the same texts, interleaved, model load excluded:
the seed prompts (short) and the seed responses (long, up to the 256-token limit). Run from the repo root:

    python bench/bench_int8.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from index.embed import load_embedder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = [json.loads(line) for line in (REPO / "ingest" / "data" / "seed.jsonl").open(encoding="utf-8")]
    sets = {"prompts": [r["prompt"] for r in rows], "responses": [r["response"] for r in rows]}
    models = {p: load_embedder(precision=p) for p in ("fp32", "int8")}
    for m in models.values():
        m.embed(sets["prompts"][:64])  # warm
    for name, texts in sets.items():
        times: dict[str, list[float]] = {p: [] for p in models}
        for r in range(args.rounds):
            for p in models if r % 2 == 0 else reversed(list(models)):
                t = time.perf_counter()
                models[p].embed(texts)
                times[p].append(time.perf_counter() - t)
        fp, q = statistics.median(times["fp32"]), statistics.median(times["int8"])
        print(
            f"{name:<10} {len(texts)} texts: fp32 {len(texts) / fp:6.0f}/s  int8 {len(texts) / q:6.0f}/s  "
            f"int8/fp32 throughput {fp / q:.2f}x (target >= 1.8x; median of {args.rounds})"
        )


if __name__ == "__main__":
    main()
