"""Speed of the MLX backend's model (SmolLM2-135M-Instruct, float32 on CPU) against peers, in one run:
decode tok/s at batch 1, aggregate tok/s at batch 16, prefill tok/s and time to first token after a
1,000-token prompt; peers: transformers (torch, CPU, float32, the same weights) and mlx-lm's own
generate_step / batch_generate on the same MLX model. Every row decodes exactly --tokens tokens (no early
stop); decode figures are the median of --repeats runs (a shared 2-core VM varies by +-10% run to run).
Prints figures; not a test. Targets on a 2-core CPU: >= 20 tok/s at batch 1, >= 100 aggregate at 16.

Spans: "decode" rows time the steps after the first token (no prefill), for our decoder and mlx-lm's
generate_step alike; `MLXBackend.stream` (the path users hit: streaming detokenizer, stop/UTF-8 streamer) is timed
over the same span from its own timings, with and without the default repetition penalty (1.1). The batch rows
time `MLXBackend.generate_batch` (the path corpus synthesis takes: mlx-lm's BatchGenerator with our per-row
probabilities, entropies, detokenizers and stop streamers) against mlx-lm's batch_generate, from the call to its
return (prefill included) for both.

    python bench/bench_mlx_decode.py [--tokens 64] [--batch 16] [--repeats 3] [--model PATH] [--skip-torch]
        [--skip-mlx-lm] [--skip-long] [--ab ROUNDS]

The prefill and first-token rows empty the prompt cache (rag/backends/prompt_cache.py) first, as a new prompt
finds it; a repeat of the same prompt (a cache hit) is a row of its own. `--ab N` runs only an interleaved A/B
of N rounds against mlx-lm (order swapped every round), the per-round ratio's median and range printed
(with --skip-long: the batch-1 and batch rows only).

(OpenBLAS is loaded by `import blt` when installed; SHVAYAMBHU_BLAS=reference keeps MLX's own BLAS.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def batch_ours(backend, questions: list[str], tokens: int) -> tuple[float, int]:
    """`MLXBackend.generate_batch` from the call to its return (prefill included, as batch_generate): seconds and
    tokens decoded."""
    from rag.backends.base import GenerationOptions

    start = time.perf_counter()
    gens = backend.generate_batch(
        [[{"role": "user", "content": q}] for q in questions], GenerationOptions(max_tokens=tokens, temperature=0.0)
    )
    return time.perf_counter() - start, sum(len(g.probs) for g in gens)


def stream_run(backend, question: str, tokens: int, penalty: float | None) -> tuple[float, int]:
    """`MLXBackend.stream` to its end: seconds after the first token and tokens decoded in them (its timings)."""
    from rag.backends.base import GenerationOptions

    options = GenerationOptions(max_tokens=tokens, temperature=0.0, repeat_penalty=penalty)
    gen = list(backend.stream([{"role": "user", "content": question}], options))[-1].generation
    n = len(gen.probs) - 1
    return n / gen.timings["tokens_per_s"], n


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
    return time.perf_counter() - start, r.stats.generation_tokens  # prefill included: compare with ours with prefill


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


def first_token_ours(backend, prompt: list[int], fresh: bool = True) -> float:
    """Seconds from the call to the first token; ``fresh``: the prompt cache emptied first (no prefix reused)."""
    if fresh:
        backend.loaded.decoder.prompt_cache.clear()
    start = time.perf_counter()
    steps = backend.loaded.decoder.decode([prompt], max_tokens=2, sampler=make_sampler(0.0), eos_ids=set())
    next(steps)
    dt = time.perf_counter() - start
    steps.close()
    return dt


def first_token_mlx_lm(backend, prompt: list[int]) -> float:
    """Seconds from the call to mlx-lm generate_step's first token (a new KV cache: nothing reused)."""
    from mlx_lm.generate import generate_step

    start = time.perf_counter()
    gen = generate_step(mx.array(prompt), backend.loaded.model, max_tokens=2)
    next(gen)
    dt = time.perf_counter() - start
    gen.close()
    return dt


def long_rows(backend, long: list[int], args: argparse.Namespace, ours: dict[str, float]) -> None:
    """Decoding after a 1,000-token prompt, its prefill, and the first token after it: fresh (the prompt cache
    emptied first: every row before ran this prompt) and on a repeat of the same prompt (a prompt-cache hit)."""
    dt, n, spread = median_run(lambda: mlx_ours(backend, [long], args.tokens), args.repeats)
    ours["b1_long"] = n / dt
    print(f"MLX backend   decode batch 1 after {len(long)} prompt tokens {rate(n, dt)} {spread}")
    backend.loaded.decoder.prompt_cache.clear()
    start = time.perf_counter()
    backend.loaded.decoder.prefill([long], 1024 + 256)
    dt = time.perf_counter() - start
    ours["prefill"] = len(long) / dt
    print(f"MLX backend   prefill (fresh)    {rate(len(long), dt)}")
    ours["ttft"] = sorted(first_token_ours(backend, long) for _ in range(args.repeats))[args.repeats // 2]
    print(f"MLX backend   first token after {len(long)} prompt tokens (fresh): {ours['ttft']:.2f} s")
    hit = sorted(first_token_ours(backend, long, fresh=False) for _ in range(args.repeats))[args.repeats // 2]
    print(f"MLX backend   first token after the same {len(long)} tokens again (prompt-cache hit): {hit:.2f} s")


def ab_rounds(backend, singles, batch: list[list[int]], questions: list[str], long: list[int], args) -> None:
    """Interleaved A/B, ours against mlx-lm on the same work, the order swapped every round (the VM's speed
    drifts between runs): decode at batch 1 (short and 1,000-token prompt), batch with prefill, first token."""
    t = args.tokens
    pairs = {
        "decode batch 1 (tok/s)": (lambda: mlx_ours(backend, singles, t), lambda: mlx_lm_peer(backend, singles, t)),
        f"decode batch 1 after {len(long)} tokens (tok/s)": (
            lambda: mlx_ours(backend, [long], t),
            lambda: mlx_lm_peer(backend, [long], t),
        ),
        f"batch {len(batch)} with prefill (tok/s)": (
            lambda: batch_ours(backend, questions, t),
            lambda: mlx_lm_peer(backend, batch, t),
        ),
        f"first token after {len(long)} tokens, fresh (s)": (
            lambda: first_token_ours(backend, long),
            lambda: first_token_mlx_lm(backend, long),
        ),
    }
    if args.skip_long:
        pairs = {k: v for k, v in pairs.items() if "after" not in k}
    for ours, peer in pairs.values():  # warm both (compiles, caches) before any timing
        ours(), peer()
    figures: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for r in range(args.ab):
        for label, (ours, peer) in pairs.items():
            for i, run in enumerate((ours, peer) if r % 2 == 0 else (peer, ours)):
                side = i if r % 2 == 0 else 1 - i
                out = run()
                figures[label][side].append(out[1] / out[0] if isinstance(out, tuple) else out)
        done = ", ".join(f"{a[-1]:.2f}/{b[-1]:.2f}" for a, b in figures.values())
        print(f"  round {r + 1}/{args.ab} (ours/mlx-lm: {done}), load average {os.getloadavg()[0]:.1f}", flush=True)
    for label, (a, b) in figures.items():
        ratios = sorted(x / y for x, y in zip(a, b, strict=True))
        print(
            f"A/B {label:<40} ours {statistics.median(a):7.2f} [{min(a):.2f}-{max(a):.2f}]   mlx-lm "
            f"{statistics.median(b):7.2f} [{min(b):.2f}-{max(b):.2f}]   ours/mlx-lm per round: median "
            f"{statistics.median(ratios):.2f} [{ratios[0]:.2f}-{ratios[-1]:.2f}]"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="decode runs per figure (the median is reported)")
    ap.add_argument("--model", default=None, help="a GGUF or mlx-lm folder (default: the bundled SmolLM2)")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-mlx-lm", action="store_true")
    ap.add_argument("--skip-long", action="store_true", help="no 1,000-token-prompt rows (prefill, first token)")
    ap.add_argument("--ab", type=int, default=0, metavar="ROUNDS", help="only an interleaved A/B against mlx-lm")
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
    questions = (QUESTIONS * 8)[: args.batch]
    batch = [tok.chat_ids([{"role": "user", "content": q}]) for q in questions]
    long = long_prompt(tok)
    mlx_ours(backend, singles, 4)  # compile the decode step for these shapes
    tok.eos_ids = set()  # this process only: the stream and batch rows decode exactly --tokens tokens too
    stream_run(backend, QUESTIONS[0], 4, None)
    batch_ours(backend, questions, 4)  # imports mlx-lm's generate module (transformers) before any timing
    if args.ab:
        ab_rounds(backend, singles, batch, questions, long, args)
        return

    results: dict[str, dict[str, float]] = {}
    dt, n, spread = median_run(lambda: mlx_ours(backend, singles, args.tokens), args.repeats)
    results["ours"] = {"b1": n / dt}
    print(f"MLX backend   decode batch 1     {rate(n, dt)} {spread}")
    for penalty in (None, 1.1):
        dt, n, spread = median_run(lambda p=penalty: stream_run(backend, QUESTIONS[0], args.tokens, p), args.repeats)
        key = "stream" if penalty is None else "stream_penalty"
        results["ours"][key] = n / dt
        label = "" if penalty is None else ", repeat_penalty 1.1"
        print(f"MLXBackend.stream batch 1{label:<20} {rate(n, dt)} {spread}")
    dt, n, spread = median_run(lambda: batch_ours(backend, questions, args.tokens), args.repeats)
    results["ours"]["b16_prefill"] = n / dt
    print(f"MLXBackend.generate_batch {args.batch:<3} {rate(n, dt)} aggregate, prefill included {spread}")
    if not args.skip_long:
        long_rows(backend, long, args, results["ours"])

    if not args.skip_mlx_lm:
        mlx_lm_peer(backend, singles, 4)
        dt, n, spread = median_run(lambda: mlx_lm_peer(backend, singles, args.tokens), args.repeats)
        results["mlx-lm"] = {"b1": n / dt}
        print(f"mlx-lm        decode batch 1     {rate(n, dt)} {spread}")
        dt, n, spread = median_run(lambda: mlx_lm_peer(backend, batch, args.tokens), args.repeats)
        results["mlx-lm"]["b16_prefill"] = n / dt
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
        ratios = [f"{k} x{ours[k] / r[k]:.2f}" for k in ("b1", "b16_prefill", "prefill") if k in r and k in ours]
        if "ttft" in r and "ttft" in ours:
            ratios.append(f"first token x{r['ttft'] / ours['ttft']:.2f} sooner")
        print(f"ours / {peer}: " + ", ".join(ratios))
    print(
        f"targets: batch 1 >= 20 tok/s ({ours['b1']:.1f}), batch 16 >= 100 tok/s aggregate "
        f"({ours['b16_prefill']:.1f}, prefill included); "
        f"load average now {os.getloadavg()[0]:.1f}: other work on this machine slows every figure"
    )


if __name__ == "__main__":
    main()
