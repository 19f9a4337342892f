"""Benchmark: BLT training and evaluation on the seed corpus. Prints figures; not a timed test.

1. MLX with OpenBLAS vs the reference BLAS: matmul GFLOP/s and a BLT training step (two subprocesses).
2. Training throughput, BLT vs the byte-transformer baseline of equal non-embedding parameters, on the same
   real batches (steady state, interleaved repeats, median).
3. At equal wall time on the seed corpus: heldout BPB of the BLT and of the baseline.
4. Retrieval-conditioned heldout BPB vs unconditioned, and vs gzip/bzip2/xz.

    python bench/bench_blt_train.py --minutes 4 --entropy-minutes 1

Responses are clipped to --response-bytes (and exemplar responses to --exemplar-bytes) for every row,
compressors included, so that a prompt, its response and some exemplars fit the small model's context.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blt import blas  # noqa: E402

if "--blas-probe" not in sys.argv:
    blas.enable_openblas()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def blas_probe(steps: int = 2) -> dict:
    """In this process (whatever BLAS it has): matmul GFLOP/s and seconds per BLT training step."""
    blas.enable_openblas(verbose=False)  # before mlx; SHVAYAMBHU_BLAS=reference keeps the reference BLAS
    import mlx.core as mx
    import numpy as np

    from blt import presets
    from blt import step as S
    from blt.model import BLT
    from blt.patch_batches import patch_bucket
    from blt.patching import patch_starts
    from blt.train_config import TrainConfig

    _, cfg = presets.model_configs("small", max_bytes=256, dropout=0.0)
    cfg = replace(cfg, patcher=replace(cfg.patcher, kind="static", static_size=4))
    model = BLT(cfg)
    x = np.random.default_rng(0).integers(4, 200, (8, 256)).astype(np.int32)
    st = np.array(patch_starts(x, cfg.patcher))
    step, state = S.make_step(model, TrainConfig(out_dir="-", max_steps=1))
    args = (mx.array(x), mx.array(x), mx.ones(x.shape), mx.array(st), patch_bucket(st, 32))
    mx.eval(state, step(*args))
    t = time.perf_counter()
    for _ in range(steps):
        mx.eval(state, step(*args))
    return {
        "backend": blas.status().backend,
        "gflops": blas.matmul_gflops(),
        "step_s": (time.perf_counter() - t) / steps,
    }


def run_probe(env_extra: dict) -> dict:
    env = {**os.environ, **env_extra}
    env.pop("LD_PRELOAD", None)
    out = subprocess.run(
        [sys.executable, __file__, "--blas-probe"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def clip_data(data, response_bytes: int):
    """Clip every response (records and exemplars) to response_bytes, for every row of the table alike."""
    from dataclasses import replace

    from blt.data import Sample, clip_response, clip_text

    def clip(s: Sample) -> Sample:
        ex = [(p, clip_text(r, response_bytes)) for p, r in s.exemplars]
        return clip_response(replace(s, exemplars=ex), response_bytes)

    data.train, data.val, data.heldout = ([clip(s) for s in part] for part in (data.train, data.val, data.heldout))
    return data


def throughput(blt_ck, base_model, samples, cfg_data, batch_size: int, repeats: int = 4, n_batches: int = 2) -> dict:
    """Steady-state training bytes/s of the BLT and the baseline on the same real batches."""
    import mlx.core as mx
    import numpy as np

    from blt import step as S
    from blt.bpb import make_starts_fn
    from blt.data import collate, eval_examples
    from blt.patch_batches import patch_bucket
    from blt.tokens import PAD
    from blt.train_config import TrainConfig

    ex = eval_examples(samples[: batch_size * n_batches], cfg_data.max_len, exemplar_bytes=cfg_data.exemplar_bytes)
    L = cfg_data.max_len  # one shape for both models
    batches = [collate(ex[i : i + batch_size], length=L) for i in range(0, len(ex) - batch_size + 1, batch_size)]
    starts_fn = make_starts_fn(blt_ck.entropy_model, blt_ck.config.patcher)
    tc = TrainConfig(out_dir="-", max_steps=1)
    runs = {}
    for name, model in (("blt", blt_ck.model), ("baseline", base_model)):
        model.train()
        step, state = S.make_step(model, tc)
        argsets = []
        for b in batches:
            a = [mx.array(b.inputs), mx.array(b.targets), mx.array(b.target_mask)]
            if name == "blt":
                st = starts_fn(b.inputs)
                a += [mx.array(st), patch_bucket(st, 32)]
            argsets.append(a)
        for a in argsets:  # compile and warm up
            mx.eval(state, step(*a))
        runs[name] = (step, state, argsets)
    n_bytes = sum(int((b.inputs != PAD).sum()) for b in batches)
    times = {"blt": [], "baseline": []}
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        for name, (step, state, argsets) in runs.items():
            t = time.perf_counter()
            for a in argsets:
                mx.eval(state, step(*a))
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [b / a for a, b in zip(times["blt"], times["baseline"], strict=True)]
    return {
        "blt_bytes_per_s": n_bytes / med["blt"],
        "baseline_bytes_per_s": n_bytes / med["baseline"],
        "speedup_median": statistics.median(ratios),
        "speedup_range": [min(ratios), max(ratios)],
        "batch": [batch_size, L - 1],
        "repeats": repeats,
        "bytes_per_repeat": n_bytes,
        "patches_per_row": float(np.mean([a[-1] for a in runs["blt"][2]])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0, help="training minutes for the BLT (and the baseline)")
    ap.add_argument("--entropy-minutes", type=float, default=1.0)
    ap.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    ap.add_argument("--max-bytes", type=int, default=1024)
    ap.add_argument("--response-bytes", type=int, default=384)
    ap.add_argument("--exemplar-bytes", type=int, default=384)
    ap.add_argument("--copy-warmup", type=float, default=0.5, help="DataConfig.self_copy (0: off)")
    ap.add_argument("--k", type=int, default=2, help="exemplars per record")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--out", default="bench/out/blt_train")
    ap.add_argument("--skip-blas", action="store_true")
    ap.add_argument("--blas-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.blas_probe:
        print(json.dumps(blas_probe()))
        return

    import shutil

    from blt import presets
    from blt import train as T
    from blt.bpb import bpb_report
    from blt.checkpoint import load_checkpoint
    from blt.data import DataConfig
    from ingest.bundled import seed_corpus
    from training.data import load_data

    command = " ".join([Path(sys.executable).name, *sys.argv])
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    res: dict = {"command": command, "load_start": load()}
    print(
        f"# bench_blt_train  ({command})\nload average {load()}; this process: {blas.status().backend}, "
        f"matmul {blas.matmul_gflops():.0f} GFLOP/s",
        flush=True,
    )

    if not args.skip_blas:
        ref = run_probe({"SHVAYAMBHU_BLAS": "reference"})
        opb = run_probe({})
        res["blas"] = {"reference": ref, "openblas": opb, "step_speedup": ref["step_s"] / opb["step_s"]}
        print(
            f"\n## BLAS (BLT small, 8x256 bytes, one training step)\nreference: {ref['gflops']:.1f} GFLOP/s, "
            f"{ref['step_s']:.3f} s/step\nopenblas ({opb['backend']}): {opb['gflops']:.1f} GFLOP/s, "
            f"{opb['step_s']:.3f} s/step\nspeed-up {res['blas']['step_speedup']:.1f}x",
            flush=True,
        )

    t0 = time.time()
    data = clip_data(load_data(sources=seed_corpus(), k=args.k, heldout_fraction=0.1), args.response_bytes)
    res["data"] = data.info
    print(f"\n## data\n{data.info} ({time.time() - t0:.1f} s)", flush=True)
    dc = DataConfig(
        max_len=args.max_bytes + 1,
        max_exemplars=args.k,
        exemplar_bytes=args.exemplar_bytes,
        response_bytes=args.response_bytes,
        self_copy=args.copy_warmup,
    )
    common = {
        "max_bytes": args.max_bytes,
        "data": dc,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "eval_every": args.eval_every,
        "progress": sys.stderr.isatty(),
        "warmup_steps": 30,
        "patience": None,
        "eval_examples": 64,
    }
    ent_cfg, blt_cfg = presets.model_configs(args.size, args.max_bytes, args.dropout)

    ent = T.train_entropy(
        data.train,
        data.val,
        presets.stage_config(
            "entropy", args.size, out / "entropy", max_minutes=args.entropy_minutes, **{**common, "lr": 3e-3}
        ),
        entropy_config=ent_cfg,
        command=command,
    )
    print(
        f"\n## entropy model\n{ent['params']} params, {ent['step']} steps, val bpb (all bytes) "
        f"{ent['best_val_bpb']:.3f}, load {load()}",
        flush=True,
    )

    blt_r = T.train_blt(
        data.train,
        data.val,
        presets.stage_config("blt", args.size, out / "blt", max_minutes=args.minutes, **common),
        entropy_dir=out / "entropy",
        blt_config=blt_cfg,
        command=command,
    )
    print(
        f"\n## BLT\n{blt_r['params']} params ({blt_r['compute_params']} non-embedding), "
        f"{blt_r['step']} steps in {blt_r['train_seconds']:.0f} s, best val bpb {blt_r['best_val_bpb']:.3f}, "
        f"threshold {blt_r['patch_threshold']}, load {load()}",
        flush=True,
    )
    base_r = T.train_baseline(
        data.train,
        data.val,
        presets.stage_config(
            "baseline", args.size, out / "baseline", max_minutes=blt_r["train_seconds"] / 60, **common
        ),
        blt_dir=out / "blt",
        command=command,
    )
    print(
        f"\n## baseline\n{base_r['params']} params ({base_r['compute_params']} non-embedding), "
        f"{base_r['step']} steps in {base_r['train_seconds']:.0f} s, "
        f"best val bpb {base_r['best_val_bpb']:.3f}, load {load()}",
        flush=True,
    )
    res["train"] = {
        k: {
            x: r.get(x)
            for x in (
                "params",
                "compute_params",
                "step",
                "train_seconds",
                "best_val_bpb",
                "bytes_per_s",
                "patch_threshold",
            )
        }
        for k, r in (("entropy", ent), ("blt", blt_r), ("baseline", base_r))
    }

    blt_ck = load_checkpoint(out / "blt" / "best")
    base_ck = load_checkpoint(out / "baseline" / "best")
    # fresh copies: the throughput steps change the weights
    tp = throughput(
        load_checkpoint(out / "blt" / "best"),
        load_checkpoint(out / "baseline" / "best").model,
        data.train,
        dc,
        args.batch_size,
    )
    res["throughput"] = tp
    print(
        f"\n## throughput (training step, batch {tp['batch']}, same real batches, median of "
        f"{tp['repeats']} interleaved)\nBLT {tp['blt_bytes_per_s']:.0f} B/s, baseline "
        f"{tp['baseline_bytes_per_s']:.0f} B/s, BLT/baseline {tp['speedup_median']:.2f}x "
        f"(range {tp['speedup_range'][0]:.2f}-{tp['speedup_range'][1]:.2f}); load {load()}",
        flush=True,
    )

    t0 = time.time()
    report = bpb_report(
        heldout=data.heldout,
        train=data.train + data.val,
        max_len=args.max_bytes + 1,
        blt=blt_ck,
        baseline=base_ck,
        max_exemplars=args.k,
        exemplar_bytes=args.exemplar_bytes,
    )
    res["bpb"] = report
    print(
        f"\n## heldout bits per byte ({len(data.heldout)} records, response bytes; "
        f"{time.time() - t0:.0f} s)\n"
        f"{report['markdown']}\n\nsummary {json.dumps(report['summary'])}",
        flush=True,
    )
    res["load_end"] = load()
    (out / "bench.json").write_text(json.dumps(res, indent=2, default=str))
    print(f"\nwrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
