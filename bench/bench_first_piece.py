"""Time and CPU from a new question to the first piece of its streamed answer, in one warm process (what a
running `shvayambhu serve` does for each request, without the HTTP and client process around it).

The server's own warm-up (rag.serve.warmup) comes first (embedder, lexical index, calibration, the decode
step's compile, the prompt head); then each question, none asked before, is timed from `stream()` to its first
piece, with the prompt tokens the MLX backend's prompt cache reused and computed for it.
CPU seconds (this process, all threads) are the steadier figure on a machine others load. `--tree` runs
another checkout's code (e.g. main's, from `git archive`) with the same store, for a side-by-side comparison.

    python bench/bench_first_piece.py --home STORE
    python bench/bench_first_piece.py --home STORE --tree /tmp/main-tree
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

QUESTIONS = (
    "Why is the sky blue?",
    "How can I save money on groceries?",
    "How do vaccines work?",
    "What is the best way to learn a new language?",
    "How far is a light-year?",
    "How do I debug a program?",
    "Why are sunsets red?",
    "How do I make bread rise better?",
    "How do I keep houseplants alive?",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="data folder with an ingested corpus")
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to run")
    ap.add_argument("--backend", default="mlx")
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    os.environ.update(
        {"SHVAYAMBHU_HOME": str(a.home), "SHVAYAMBHU_MLX_MAX_TOKENS": str(a.max_tokens), "HF_HUB_OFFLINE": "1"}
    )
    sys.path.insert(0, str(a.tree.resolve()))
    from blt.blas import enable_openblas

    enable_openblas(verbose=False)
    from rag.api import Shvayambhu
    from rag.serve.warmup import first_piece as warm_up

    assistant = Shvayambhu()
    backend = assistant.backend(a.backend)
    cache = getattr(getattr(backend, "loaded", None), "decoder", None)
    cache = getattr(cache, "prompt_cache", None)  # the MLX backend's: how much of each prompt was computed

    def first_piece(question: str) -> tuple[float, float, str, tuple[int, int]]:
        counts = (cache.hits, cache.computed) if cache is not None else (0, 0)
        wall, cpu = time.perf_counter(), time.process_time()
        stream = assistant.stream(question, backend=backend, use_memory=False)
        piece = next(iter(stream), "")
        spent = time.perf_counter() - wall, time.process_time() - cpu
        stream.close()
        after = (cache.hits, cache.computed) if cache is not None else (0, 0)
        return *spent, piece, (after[0] - counts[0], after[1] - counts[1])

    warm_up(assistant, backend)  # what a server does before its first request
    generated, reused, computed = [], 0, 0
    for q in QUESTIONS:
        wall, cpu, piece, (hit, run) = first_piece(q)
        tokens = f"prompt tokens reused {hit:4}, computed {run:4}" if hit + run else "no model"
        print(f"{wall:6.2f} s {cpu:6.2f} CPU s  {tokens}  {q[:40]!r:44} -> {piece[:30]!r}", flush=True)
        if hit + run or cpu > 0.1:  # not an answer the confidence gate gives in its own words, without the model
            generated.append((wall, cpu))
            reused, computed = reused + hit, computed + run
    walls, cpus = [g[0] for g in generated], [g[1] for g in generated]
    print(
        f"\n{a.tree}: {len(generated)} generated answers, first piece: median {statistics.median(walls):.2f} s "
        f"[{min(walls):.2f}-{max(walls):.2f}], CPU {statistics.median(cpus):.2f} s [{min(cpus):.2f}-{max(cpus):.2f}]; "
        f"prompt tokens reused {reused}, computed {computed}; "
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
