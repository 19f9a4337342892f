"""Decoding speed: the BLT with its KV caches against recomputing every byte, and against a plain byte
transformer with the same number of compute (non-embedding) parameters and its own KV cache.

Prints figures; not a test. Random-init models of the default CPU size are used unless checkpoints are
given. A random entropy model is near-uniform, so its threshold is set to give ~4.5 bytes per patch on
this text. Uncached decoding is too slow to run to 1024 bytes here, so its rate is estimated from full
recomputations at the start, middle and end of the generated span (Simpson's rule over the prefix length).

    python bench/bench_blt_decode.py [--checkpoint DIR] [--baseline DIR] [--gen 256 1024]

(OpenBLAS is loaded at start-up when installed; SHVAYAMBHU_BLAS=reference keeps MLX's own BLAS.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blt import blas  # noqa: E402

blas.enable_openblas(verbose=False)  # before mlx: OpenBLAS when installed

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402

from blt.baseline import ByteTransformer  # noqa: E402
from blt.checkpoint import load_checkpoint  # noqa: E402
from blt.config import BaselineConfig, BLTConfig  # noqa: E402
from blt.entropy import EntropyModel  # noqa: E402
from blt.generate import BaselineDecoder, BLTDecoder, generate_text  # noqa: E402
from blt.layers import num_params  # noqa: E402
from blt.model import BLT  # noqa: E402
from blt.tokens import BOS, encode  # noqa: E402

TEXT = (
    "Retrieval-augmented generation keeps a small model honest: before answering, it reads the most similar "
    "examples from its own corpus and adapts them, instead of reciting what it memorised. The byte latent "
    "transformer groups bytes into patches where the next byte is hard to predict, so easy stretches cost "
    "little and the large global model runs once per patch rather than once per byte. "
)


def compute_params(model: nn.Module) -> int:
    """Parameters outside embedding tables (lookups cost no compute)."""
    emb = sum(m.weight.size for _, m in model.named_modules() if isinstance(m, nn.Embedding))
    return num_params(model) - emb


def matched_baseline(target: int, max_bytes: int) -> BaselineConfig:
    """The baseline (head dim 64) whose compute parameters are closest to ``target``."""
    best = None
    for layers in range(2, 13):
        for dim in range(128, 1025, 64):
            cfg = BaselineConfig(dim=dim, n_layers=layers, n_heads=dim // 64, max_bytes=max_bytes)
            gap = abs(np.log(compute_params(ByteTransformer(cfg)) / target))
            if best is None or gap < best[0]:
                best = (gap, cfg)
    assert best is not None
    return best[1]


def calibrate(model: BLT, em: EntropyModel, prompt: list[int], target: float = 4.5) -> float:
    """Threshold giving ~``target`` bytes per patch over the prompt and a greedy continuation."""
    probe = generate_text((model, em), prompt, max_bytes=256, ignore_eos=True)
    dec = BLTDecoder(model, em)
    dec.prefill(prompt + probe.tokens[:-1])
    return float(np.quantile(np.array(dec.entropies), 1 - 1 / target))


def recompute_time(make_decoder, prefix: list[int], repeats: int) -> float:
    """Seconds for one uncached next-byte prediction after ``prefix`` (best of ``repeats``)."""
    times = []
    for _ in range(repeats):
        dec = make_decoder()
        t = time.perf_counter()
        dec.prefill(prefix)
        times.append(time.perf_counter() - t)
    return min(times)


def bench(name: str, source, make_uncached, prompt: list[int], gens: list[int], repeats: int) -> list[dict]:
    rows = []
    for n in gens:
        best = None
        for _ in range(repeats):
            r = generate_text(source, prompt, max_bytes=n, ignore_eos=True)
            if best is None or r.timings["total_s"] < best.timings["total_s"]:
                best = r
        assert best is not None and len(best.tokens) == n
        cached_bps = n / best.timings["decode_s"]
        seq = prompt + best.tokens
        reps = max(1, repeats - 1)
        f = [recompute_time(make_uncached, seq[: len(prompt) + k], reps) for k in (0, n // 2, n - 1)]
        per_byte = (f[0] + 4 * f[1] + f[2]) / 6
        row = {
            "model": name, "gen": n, "cached_bps": cached_bps, "uncached_bps": 1 / per_byte,
            "speedup": cached_bps * per_byte, "ttfb_ms": best.timings["first_byte_s"] * 1e3,
            "bytes_per_patch": (len(seq) - 1) / best.n_patches if best.n_patches else None,
        }  # fmt: skip
        rows.append(row)
        print(
            f"{name:9s} gen={n:5d}  cached {cached_bps:7.1f} B/s   uncached (est.) {1 / per_byte:6.2f} B/s   "
            f"cached/uncached {row['speedup']:6.1f}x   first byte {row['ttfb_ms']:6.0f} ms"
            + (f"   {row['bytes_per_patch']:.2f} bytes/patch" if row["bytes_per_patch"] else ""),
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a BLT checkpoint folder (default: random init, default config)")
    ap.add_argument("--baseline", help="a baseline checkpoint folder (default: random init, matched params)")
    ap.add_argument("--prompt-bytes", type=int, default=1024)
    ap.add_argument("--gen", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs (machines are shared)")
    args = ap.parse_args()

    mx.random.seed(0)
    body = (TEXT * (args.prompt_bytes // len(TEXT) + 1)).encode()[: args.prompt_bytes - 1]
    prompt = [BOS] + encode(body)
    if args.checkpoint:
        ck = load_checkpoint(args.checkpoint)
        model, em = ck.model, ck.entropy_model
        how = f"checkpoint {args.checkpoint}"
    else:
        cfg = BLTConfig()
        model, em = BLT(cfg), EntropyModel(cfg.entropy)
        mx.eval(model.parameters(), em.parameters())
        cfg.patcher.threshold = calibrate(model, em, prompt)
        how = f"random init, entropy threshold {cfg.patcher.threshold:.4f} (calibrated to ~4.5 bytes/patch)"
    if args.baseline:
        base = load_checkpoint(args.baseline).model
    else:
        base = ByteTransformer(matched_baseline(compute_params(model), model.cfg.max_bytes))
        mx.eval(base.parameters())

    c = model.cfg
    print(f"BLT: {how}")
    print(
        f"  entropy {c.entropy.n_layers}x{c.entropy.dim}, encoder {c.enc_layers}x{c.enc_dim}, global "
        f"{c.global_layers}x{c.global_dim}, decoder {c.dec_layers}x{c.dec_dim}, window {c.local_window}, "
        f"hash n={c.ngram_min}..{c.ngram_max} x {c.hash_rows} rows, patcher {c.patcher.kind}"
    )
    ent_params = compute_params(em) if em is not None else 0
    print(
        f"  params {num_params(model) / 1e6:.2f}M total, {compute_params(model) / 1e6:.2f}M compute "
        f"(+ entropy model {ent_params / 1e6:.2f}M compute)"
    )
    b = base.cfg
    print(
        f"baseline: {b.n_layers}x{b.dim} ({b.n_heads} heads), params {num_params(base) / 1e6:.2f}M total, "
        f"{compute_params(base) / 1e6:.2f}M compute"
    )
    print(
        f"prompt {len(prompt)} bytes; greedy; BLAS: {blas.status().backend}; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    rows = bench("BLT", (model, em), lambda: BLTDecoder(model, em, use_cache=False), prompt, args.gen, args.repeats)
    rows += bench("baseline", base, lambda: BaselineDecoder(base, use_cache=False), prompt, args.gen, args.repeats)
    for n in args.gen:
        blt_row = next(r for r in rows if r["model"] == "BLT" and r["gen"] == n)
        base_row = next(r for r in rows if r["model"] == "baseline" and r["gen"] == n)
        ratio = blt_row["cached_bps"] / base_row["cached_bps"]
        print(
            f"gen={n}: BLT/baseline cached decoding speed {ratio:.2f}x, "
            f"time to first byte {blt_row['ttfb_ms']:.0f} vs {base_row['ttfb_ms']:.0f} ms"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
