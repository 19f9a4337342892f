"""The training loop shared by the three stages (entropy model, BLT, baseline): a compiled step, validation
BPB with early stopping, best and last checkpoints, a JSONL log, step and time budgets, resuming.

Stage folder layout: `last/` (checkpoint + optimizer.safetensors + trainer.json, for resuming),
`best/` (best validation BPB), `log.jsonl`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from blt.bpb import LN2, Score, StartsFn, score
from blt.data import Sample, eval_examples, train_batches
from blt.patch_batches import StartsCache, patch_bucket
from blt.progress import Progress
from blt.run_state import TrainerState, load_trainer, save_trainer
from blt.step import lr_at, make_optimizer, make_step
from blt.tokens import PAD
from blt.train_config import TrainConfig


def fit(
    model: nn.Module,
    train: Sequence[Sample],
    val: Sequence[Sample],
    cfg: TrainConfig,
    *,
    save: Callable[[Path, dict[str, Any]], None],
    starts_fn: StartsFn | None = None,
    resume_state: Path | None = None,
    command: str = "",
    extra_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model` on samples until a budget or early stopping; returns the final metrics.

    `save(folder, metrics)` writes a checkpoint of the model. `starts_fn` makes this a BLT run.
    `resume_state` is a `last/` folder whose weights were already loaded into `model`.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_bytes = cfg.kind == "entropy"
    mx.random.seed(cfg.seed)  # dropout masks come from MLX's generator: a seeded run repeats

    optimizer = make_optimizer(model, cfg)
    st = TrainerState()
    if resume_state is not None:
        st = load_trainer(resume_state, optimizer)

    cache = StartsCache(starts_fn) if starts_fn is not None else None
    val_ex = eval_examples(
        val[: cfg.eval_examples] if cfg.eval_examples else val,
        cfg.data.max_len,
        max_exemplars=cfg.data.max_exemplars,
        exemplar_bytes=cfg.data.exemplar_bytes,
    )

    step, state = make_step(model, cfg, optimizer)

    def evaluate() -> Score:
        return score(
            model,
            val_ex,
            starts_fn=cache,
            batch_size=cfg.batch_size,
            pad_multiple=cfg.pad_multiple,
            all_bytes=all_bytes,
        )

    def progress_of(s: TrainerState) -> float:
        p = 0.0
        if cfg.max_steps:
            p = max(p, s.step / cfg.max_steps)
        if cfg.max_minutes:
            p = max(p, s.elapsed / (cfg.max_minutes * 60))
        return p

    def metrics(val_bpb: float | None = None) -> dict[str, Any]:
        return {
            "kind": cfg.kind,
            "step": st.step,
            "epoch": st.epoch,
            "val_bpb": val_bpb,
            "best_val_bpb": st.best_val if math.isfinite(st.best_val) else None,
            "best_step": st.best_step,
            "train_seconds": st.elapsed,
            "bytes_seen": st.bytes_seen,
            "compile_seconds": st.compile_seconds,
            "shapes": len(shapes),
            "bytes_per_s": st.bytes_seen / st.elapsed if st.elapsed else None,
            "stopped": st.stopped,
            "command": command,
            "train_config": cfg.to_dict(),
            "train_examples": len(train),
            "val_examples": len(val_ex),
            **(extra_metrics or {}),
        }

    log = (out / "log.jsonl").open("a")

    def write_log(rec: dict[str, Any]) -> None:
        log.write(json.dumps(rec) + "\n")
        log.flush()

    def validate() -> float:
        """Score the validation set; keep best/ when it improved; log it."""
        val = evaluate().bpb
        improved = val < st.best_val - cfg.min_delta
        if improved:
            st.best_val, st.best_step, st.bad_evals = val, st.step, 0
            save(out / "best", metrics(val))
        else:
            st.bad_evals += 1
        write_log(
            {
                "step": st.step,
                "val_bpb": val,
                "best_val_bpb": st.best_val,
                "improved": improved,
                "elapsed": st.elapsed,
            }
        )
        return val

    bar = Progress(cfg.progress and sys.stderr.isatty(), 1.0, cfg.kind)
    data = train_batches(
        train,
        cfg.batch_size,
        cfg.data,
        seed=cfg.seed,
        pad_multiple=cfg.pad_multiple,
        start=(st.epoch, st.batch_in_epoch),
    )
    model.train()
    shapes: set[tuple[Any, ...]] = set()
    last_val: float | None = None
    first_step = st.step
    t_start = time.perf_counter() - st.elapsed
    t_rate, bytes_rate, loss_acc, n_acc = time.perf_counter(), 0, 0.0, 0
    st.stopped = ""
    try:
        while True:
            if cfg.patience is not None and st.bad_evals >= cfg.patience:
                st.stopped = "early stopping"
                break
            if cfg.max_steps is not None and st.step >= cfg.max_steps:
                st.stopped = "max steps"
                break
            if cfg.max_minutes is not None and st.elapsed >= cfg.max_minutes * 60:
                st.stopped = "time budget"
                break
            epoch, j, batch = next(data)
            x, y = batch.inputs, batch.targets
            w = (y != PAD).astype(np.float32) if all_bytes else batch.target_mask
            args = [mx.array(x), mx.array(y), mx.array(w)]
            if cache is not None:
                starts = cache(x)
                args += [mx.array(starts), patch_bucket(starts, cfg.patch_bucket)]
            optimizer.learning_rate = lr_at(st.step, progress_of(st), cfg)
            shape = (x.shape, args[-1] if cache is not None else 0)
            t_step = time.perf_counter()
            loss, gnorm = step(*args)
            mx.eval(state, loss)
            if shape not in shapes:
                shapes.add(shape)
                st.compile_seconds += time.perf_counter() - t_step
            n_bytes = int((x != PAD).sum())
            st.step += 1
            st.epoch, st.batch_in_epoch = epoch, j + 1
            st.bytes_seen += n_bytes
            bytes_rate += n_bytes
            loss_acc += float(loss.item())
            n_acc += 1
            st.elapsed = time.perf_counter() - t_start
            if st.step % cfg.log_every == 0 or st.step == 1:
                now = time.perf_counter()
                rate = bytes_rate / max(now - t_rate, 1e-9)
                rec = {
                    "step": st.step,
                    "epoch": epoch,
                    "loss": loss_acc / n_acc,
                    "bpb": loss_acc / n_acc / LN2,
                    "lr": lr_at(st.step, progress_of(st), cfg),
                    "grad_norm": float(gnorm.item()),
                    "bytes_per_s": rate,
                    "elapsed": st.elapsed,
                }
                write_log(rec)
                val_s = f"{last_val:.3f}" if last_val is not None else "-"
                bar.update(
                    progress_of(st),
                    f"step {st.step} loss {rec['loss']:.3f} val bpb {val_s} {rate / 1e3:.1f} kB/s",
                )
                t_rate, bytes_rate, loss_acc, n_acc = now, 0, 0.0, 0
            if st.step % cfg.eval_every == 0 and val_ex:
                last_val = validate()
                model.train()
                st.elapsed = time.perf_counter() - t_start  # evaluation counts against the time budget
    except KeyboardInterrupt:
        st.stopped = "interrupted"
    finally:
        bar.close()
    # a final evaluation when the last step was not evaluated, so best/ always exists
    if val_ex and st.step > first_step and st.step % cfg.eval_every != 0:
        last_val = validate()
    if not val_ex and st.step > first_step:
        save(out / "best", metrics(None))
    if st.step > first_step or resume_state is None:
        save(out / "last", metrics(last_val))
        save_trainer(out / "last", optimizer, st)
    final = metrics(last_val)
    write_log({"step": st.step, "stopped": st.stopped, "best_val_bpb": final["best_val_bpb"], "elapsed": st.elapsed})
    log.close()
    if cache is not None:
        final["starts_cache"] = {"hits": cache.hits, "misses": cache.misses}
    return final
