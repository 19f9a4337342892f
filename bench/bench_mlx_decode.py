"""Speed of the MLX backend's model (SmolLM2-135M-Instruct, float32 on CPU) against peers, in one run:
decode tok/s at batch 1, aggregate tok/s at batch 16, prefill tok/s and time to first token after a
1,000-token prompt; peers: transformers (torch, CPU, float32, the same weights) and mlx-lm's own
generate_step / batch_generate on the same MLX model. Every row decodes exactly --tokens tokens (no early
stop); decode figures are the median of --repeats runs (a shared 2-core VM varies by +-10% run to run).
Prints figures; not a test. Targets on a 2-core CPU: >= 20 tok/s at batch 1, >= 100 aggregate at 16.

    python bench/bench_mlx_decode.py [--tokens 64] [--batch 16] [--repeats 3] [--model PATH] [--skip-torch]
        [--skip-mlx-lm]

(OpenBLAS is loaded by `import blt` when installed; SHVAYAMBHU_BLAS=reference keeps MLX's own BLAS.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from blt import blas  # noqa: E402

blas.enable_openblas(verbose=False)  # before mlx: OpenBLAS when installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mlx.core as mx  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from rag.backends.mlx import load_mlx_backend  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Write a short story about a dragon.",
    "Explain photosynthesis.",
    "How do I sort a list in Python?",
    "Why is the sky blue?",
    "Name three prime numbers.",
    "What is a black hole?",
    "Give me a recipe for pancakes.",
    "What does DNA stand for?",
    "Describe the water cycle.",
    "Who wrote Hamlet?",
    "How far is the Moon?",
    "What is entropy?",
    "Translate 'good morning' into Spanish.",
    "What is machine learning?",
    "Summarise the French Revolution.",
]


def long_prompt(tok, n: int = 1000) -> list[int]:
    """A chat prompt of exactly n tokens from the seed corpus's answers."""
    seed = ROOT / "ingest" / "data" / "seed.jsonl"
    texts = [json.loads(line)["response"] for line in seed.read_text(encoding="utf-8").splitlines()[:200]]
    head = tok.chat_ids([{"role": "user", "content": "Summarise:\n"}])
    body = tok.encode("\n\n".join(texts))
    return (head[:-5] + body)[: n - 5] + head[-5:]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} tok/s ({n} tokens in {seconds:.2f} s)"


def median_run(run, repeats: int) -> tuple[float, int, str]:
    """The median of ``repeats`` (seconds, tokens) runs, and the range of their rates for the printout."""
    runs = sorted(run() for _ in range(repeats))
    rates = [n / dt for dt, n in runs]
    dt, n = runs[len(runs) // 2]
    return dt, n, f"[{min(rates):.1f}-{max(rates):.1f} over {repeats} runs]"


def mlx_ours(backend, prompts: list[list[int]], tokens: int) -> tuple[float, int]:
    """Seconds for the decode steps after the first token, and tokens decoded in them."""
    steps = backend.loaded.decoder.decode(prompts, max_tokens=tokens, sampler=make_sampler(0.0), eos_ids=set())
    next(steps)
    start = time.perf_counter()
    n = sum(len(s) for s in steps)
    return time.perf_counter() - start, n


def mlx_lm_peer(backend, prompts: list[list[int]], tokens: int) -> tuple[float, int]:
    from mlx_lm.generate import batch_generate, generate_step

    if len(prompts) == 1:
        gen = generate_step(mx.array(prompts[0]), backend.loaded.model, max_tokens=tokens)
        next(gen)
        start = time.perf_counter()
        n = sum(1 for _ in gen)
        return time.perf_counter() - start, n
    tok = SimpleNamespace(eos_token_ids=[], decode=backend.tokenizer.decode)
    start = time.perf_counter()
    r = batch_generate(backend.loaded.model, tok, prompts, max_tokens=tokens)
    return time.perf_counter() - start, r.stats.generation_tokens  # includes prefill: a flattering lower bound


def torch_peer(model, prompts: list[list[int]], tokens: int) -> tuple[float, int]:
    import torch

    length = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        first = time.perf_counter()
        model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False, pad_token_id=0)
        one = time.perf_counter() - first
        start = time.perf_counter()
        model.generate(
            ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0
        )
    return time.perf_counter() - start - one, len(prompts) * (tokens - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="decode runs per figure (the median is reported)")
    ap.add_argument("--model", default=None, help="a GGUF or mlx-lm folder (default: the bundled SmolLM2)")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-mlx-lm", action="store_true")
    args = ap.parse_args()

    started = time.perf_counter()
    backend = load_mlx_backend(args.model)
    print(
        f"model {backend.model} ({backend.loaded.dtype}), loaded in {time.perf_counter() - started:.1f} s; "
        f"BLAS: {blas.status().backend}, matmul {blas.matmul_gflops(512):.0f} GFLOP/s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    tok = backend.tokenizer
    singles = [tok.chat_ids([{"role": "user", "content": QUESTIONS[0]}])]
    batch = [tok.chat_ids([{"role": "user", "content": q}]) for q in (QUESTIONS * 8)[: args.batch]]
    long = long_prompt(tok)
    mlx_ours(backend, singles, 4)  # compile the decode step for these shapes
    mlx_ours(backend, batch, 4)

    results: dict[str, dict[str, float]] = {}
    dt, n, spread = median_run(lambda: mlx_ours(backend, singles, args.tokens), args.repeats)
    results["ours"] = {"b1": n / dt}
    print(f"MLX backend   decode batch 1     {rate(n, dt)} {spread}")
    dt, n, spread = median_run(lambda: mlx_ours(backend, batch, args.tokens), args.repeats)
    results["ours"]["b16"] = n / dt
    print(f"MLX backend   decode batch {args.batch:<3}   {rate(n, dt)} aggregate {spread}")
    dt, n, spread = median_run(lambda: mlx_ours(backend, [long], args.tokens), args.repeats)
    results["ours"]["b1_long"] = n / dt
    print(f"MLX backend   decode batch 1 after {len(long)} prompt tokens {rate(n, dt)} {spread}")
    start = time.perf_counter()
    backend.loaded.decoder.prefill([long], 1024 + 256)
    dt = time.perf_counter() - start
    results["ours"]["prefill"] = len(long) / dt
    print(f"MLX backend   prefill            {rate(len(long), dt)}")
    start = time.perf_counter()
    next(backend.loaded.decoder.decode([long], max_tokens=2, sampler=make_sampler(0.0), eos_ids=set()))
    results["ours"]["ttft"] = time.perf_counter() - start
    print(f"MLX backend   first token after {len(long)} prompt tokens: {results['ours']['ttft']:.2f} s")

    if not args.skip_mlx_lm:
        mlx_lm_peer(backend, singles, 4)
        dt, n, spread = median_run(lambda: mlx_lm_peer(backend, singles, args.tokens), args.repeats)
        results["mlx-lm"] = {"b1": n / dt}
        print(f"mlx-lm        decode batch 1     {rate(n, dt)} {spread}")
        dt, n, spread = median_run(lambda: mlx_lm_peer(backend, batch, args.tokens), args.repeats)
        results["mlx-lm"]["b16"] = n / dt
        print(f"mlx-lm        batch_generate {args.batch:<3} {rate(n, dt)} aggregate, prefill included {spread}")

    if not args.skip_torch and backend.path.is_file():
        import torch
        from llama_reference import torch_llama

        model = torch_llama(backend.path)
        torch_peer(model, singles, 4)
        dt, n = torch_peer(model, singles, args.tokens)
        results["torch"] = {"b1": n / dt}
        print(
            f"transformers  decode batch 1     {rate(n, dt)}  (torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads)"
        )
        dt, n = torch_peer(model, batch, args.tokens)
        results["torch"]["b16"] = n / dt
        print(f"transformers  decode batch {args.batch:<3}   {rate(n, dt)} aggregate")
        with torch.no_grad():
            start = time.perf_counter()
            model(torch.tensor([long]))
            dt = time.perf_counter() - start
        results["torch"]["prefill"] = len(long) / dt
        results["torch"]["ttft"] = dt
        print(f"transformers  prefill            {rate(len(long), dt)} (= first token after {len(long)} tokens)")

    ours = results["ours"]
    for peer, r in results.items():
        if peer == "ours":
            continue
        ratios = [f"{k} x{ours[k] / r[k]:.2f}" for k in ("b1", "b16", "prefill") if k in r]
        if "ttft" in r:
            ratios.append(f"first token x{r['ttft'] / ours['ttft']:.2f} sooner")
        print(f"ours / {peer}: " + ", ".join(ratios))
    print(
        f"targets: batch 1 >= 20 tok/s ({ours['b1']:.1f}), batch 16 >= 100 tok/s aggregate ({ours['b16']:.1f}); "
        f"load average now {os.getloadavg()[0]:.1f}: other work on this machine slows every figure"
    )


if __name__ == "__main__":
    main()
