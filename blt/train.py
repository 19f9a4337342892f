"""Training: (a) the entropy model, (b) the BLT on patches from the frozen entropy model, and the equal-size
byte-transformer baseline. One loop for all three: AdamW (0.9, 0.95), weight decay 0.1, warmup + cosine,
gradient clip 1.0, a compiled step, validation BPB with early stopping, best and last checkpoints, a JSONL
log, step and time budgets, resumable from the stage folder.

Stage folder layout: `last/` (checkpoint + optimizer.safetensors + trainer.json, for resuming),
`best/` (best validation BPB), `log.jsonl`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from blt import blas

blas.enable_openblas()  # before mlx is first imported; a no-op where it is not needed

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten, tree_unflatten  # noqa: E402

from blt.bpb import LN2, Score, StartsFn, make_starts_fn, score  # noqa: E402
from blt.config import BaselineConfig, BLTConfig, EntropyConfig, PatcherConfig  # noqa: E402
from blt.data import DataConfig, Example, Sample, eval_examples, train_batches  # noqa: E402
from blt.tokens import PAD  # noqa: E402

KINDS = ("entropy", "blt", "baseline")


@dataclass
class TrainConfig:
    """Optimisation, budgets and bookkeeping of one training stage."""

    out_dir: str
    kind: str = "blt"  # entropy | blt | baseline
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    max_steps: int | None = 2000
    max_minutes: float | None = None
    eval_every: int = 100
    eval_examples: int | None = 256  # validation examples scored per evaluation (None: all)
    patience: int | None = 5  # evaluations without improvement before stopping (None: never)
    min_delta: float = 1e-4  # an improvement must beat the best val BPB by this much
    seed: int = 0
    pad_multiple: int = 128  # batch lengths are rounded up to this: each new shape is a new compile
    patch_bucket: int = 64  # BLT: the number of patches is rounded up to this, for the same reason
    log_every: int = 10
    progress: bool = True
    resume: bool = True
    compile: bool = True
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TrainConfig.kind must be one of {KINDS}, not {self.kind!r}")
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError("give a step budget (max_steps) or a time budget (max_minutes)")
        if isinstance(self.data, dict):
            self.data = DataConfig(**{k: tuple(v) if k == "formats" else v for k, v in self.data.items()})
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- model presets ----


def model_configs(
    size: str = "small", max_bytes: int | None = None, dropout: float = 0.1
) -> tuple[EntropyConfig, BLTConfig]:
    """Entropy and BLT configs: tiny (tests), small (a 2-core CPU, minutes), base (DESIGN.md's starting
    point, for Apple Silicon or a GPU)."""
    if size == "tiny":
        ent = EntropyConfig(dim=64, n_layers=1, n_heads=2, window=64)
        cfg = BLTConfig(
            max_bytes=max_bytes or 256,
            ngram_min=3,
            ngram_max=5,
            hash_rows=2048,
            enc_dim=64,
            enc_layers=1,
            enc_heads=2,
            local_window=64,
            global_dim=128,
            global_layers=2,
            global_heads=2,
            dec_dim=64,
            dec_layers=1,
            dec_heads=2,
            cross_k=2,
            dropout=dropout,
            patcher=PatcherConfig(max_patch_len=8),
            entropy=ent,
        )
    elif size == "small":
        ent = EntropyConfig(dim=64, n_layers=2, n_heads=2, window=128)
        cfg = BLTConfig(
            max_bytes=max_bytes or 1024,
            hash_rows=4096,
            enc_dim=128,
            enc_layers=1,
            enc_heads=2,
            local_window=128,
            global_dim=256,
            global_layers=4,
            global_heads=4,
            dec_dim=128,
            dec_layers=2,
            dec_heads=2,
            cross_k=2,
            dropout=dropout,
            entropy=ent,
            patcher=PatcherConfig(max_patch_len=8),
        )
    elif size == "base":
        ent = EntropyConfig(dim=128, n_layers=2, n_heads=4, window=256)
        cfg = BLTConfig(
            max_bytes=max_bytes or 2048,
            hash_rows=16384,
            enc_dim=256,
            enc_layers=1,
            enc_heads=4,
            local_window=256,
            global_dim=384,
            global_layers=6,
            global_heads=6,
            dec_dim=256,
            dec_layers=2,
            dec_heads=4,
            cross_k=2,
            dropout=dropout,
            entropy=ent,
            patcher=PatcherConfig(max_patch_len=12),
        )
    else:
        raise ValueError(f"unknown size {size!r}: use tiny, small or base")
    return ent, cfg


SIZES = ("tiny", "small", "base")
DEFAULT_MAX_BYTES = {"tiny": 256, "small": 1024, "base": 2048}


def stage_config(
    kind: str,
    size: str,
    out_dir: str | Path,
    *,
    max_bytes: int | None = None,
    data: DataConfig | None = None,
    **overrides: Any,
) -> TrainConfig:
    """A TrainConfig with defaults suited to a stage and size; `overrides` are TrainConfig fields."""
    lr = {"entropy": 2e-3, "blt": 1e-3, "baseline": 1e-3}[kind]
    bs = {"tiny": 8, "small": 8, "base": 16}[size]
    ml = max_bytes or DEFAULT_MAX_BYTES[size]
    base: dict[str, Any] = {
        "out_dir": str(out_dir),
        "kind": kind,
        "lr": lr,
        "batch_size": bs,
        "data": data or DataConfig(max_len=ml + 1),
        "warmup_steps": 20 if size == "tiny" else 100,
        "eval_every": 25 if size == "tiny" else 100,
    }
    if data is not None:
        base["data"] = replace(data, max_len=ml + 1)
    base.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("max_steps") is None:
        base["max_steps"] = None if base.get("max_minutes") else 2000
    return TrainConfig(**base)


def match_baseline(
    target_params: int, max_bytes: int, dropout: float = 0.1, n_layers: int | None = None, head_dim: int = 64
) -> BaselineConfig:
    """The byte-transformer config (dims in steps of head_dim) closest to `target_params` non-embedding
    parameters (compute_params): the hash tables of the BLT are lookups, not compute."""
    from blt.baseline import ByteTransformer

    best: tuple[float, BaselineConfig] | None = None
    for layers in [n_layers] if n_layers else range(2, 13):
        for dim in range(head_dim, 2049, head_dim):
            cfg = BaselineConfig(
                dim=dim, n_layers=layers, n_heads=dim // head_dim, dropout=dropout, max_bytes=max_bytes
            )
            n = compute_params(ByteTransformer(cfg))  # parameters are lazy: nothing is computed here
            gap = abs(math.log(n / target_params))
            if best is None or gap < best[0]:
                best = (gap, cfg)
            if n > target_params:
                break
    assert best is not None
    return best[1]


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, embeddings and hash tables included)."""
    return sum(v.size for _, v in tree_flatten(model.parameters()))


# ---- the loop ----


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_steps, then cosine from lr to lr * min_lr_ratio as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    p = min(max(progress, 0.0), 1.0)
    cos = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return cfg.lr * warm * cos


def masked_mean_ce(logits: mx.array, targets: mx.array, mask: mx.array) -> mx.array:
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none")
    return (ce * mask).sum() / mx.maximum(mask.sum(), 1.0)


def patch_bucket(starts: np.ndarray, multiple: int) -> int:
    """Most patches in a row of `starts`, rounded up to `multiple` (to T/8 for short rows; at most T)."""
    s = starts.copy()
    s[:, 0] = True
    n = int(s.sum(axis=1).max())
    T = starts.shape[1]
    m = max(8, min(multiple, T // 8))
    return min(-(-n // m) * m, T)


def compute_params(model: nn.Module) -> int:
    """Parameters outside embedding tables (byte and hashed n-gram lookups cost no compute)."""
    emb = sum(m.weight.size for _, m in model.named_modules() if isinstance(m, nn.Embedding))
    return count_params(model) - emb


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> optim.Optimizer:
    """AdamW with the config's betas and weight decay, its state initialised for `model`."""
    optimizer = optim.AdamW(learning_rate=cfg.lr, betas=list(cfg.betas), weight_decay=cfg.weight_decay)
    optimizer.init(model.trainable_parameters())
    return optimizer


def make_step(
    model: nn.Module, cfg: TrainConfig, optimizer: optim.Optimizer | None = None
) -> tuple[Callable[..., tuple[mx.array, mx.array]], list[Any]]:
    """The training step `step(x, y, mask, *model_args) -> (loss, grad_norm)` and the state it updates.

    Masked mean cross-entropy, gradient clipping, an AdamW update; compiled as a whole with the model,
    optimizer and random state as its implicit inputs and outputs. `mx.eval(state)` after each call.
    """
    optimizer = optimizer or make_optimizer(model, cfg)

    def loss_fn(m: nn.Module, x: mx.array, y: mx.array, w: mx.array, *extra: Any) -> mx.array:
        return masked_mean_ce(m(x, *extra), y, w)

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    def step(x: mx.array, y: mx.array, w: mx.array, *extra: Any) -> tuple[mx.array, mx.array]:
        loss, grads = loss_and_grad(model, x, y, w, *extra)
        grads, gnorm = optim.clip_grad_norm(grads, cfg.grad_clip)
        optimizer.update(model, grads)
        return loss, gnorm

    if cfg.compile:
        step = partial(mx.compile, inputs=state, outputs=state)(step)
    return step, state


class StartsCache:
    """Patch starts per example row (keyed by its padded bytes), computed once by the frozen entropy model."""

    def __init__(self, starts_fn: Callable[[np.ndarray], np.ndarray], max_items: int = 200_000):
        self.fn, self.max_items = starts_fn, max_items
        self.rows: dict[bytes, np.ndarray] = {}
        self.hits = self.misses = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        keys = [row.tobytes() for row in x]
        missing = [i for i, k in enumerate(keys) if k not in self.rows]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            got = self.fn(x[missing])
            if len(self.rows) + len(missing) > self.max_items:
                self.rows.clear()
            for j, i in enumerate(missing):
                self.rows[keys[i]] = got[j]
        return np.stack([self.rows[k] for k in keys])


@dataclass
class TrainerState:
    """What resuming needs besides weights and optimizer: where in the data and the budgets we are."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    bytes_seen: int = 0
    compile_seconds: float = 0.0  # time of steps that met a new shape (compilation, mostly)
    best_val: float = float("inf")
    best_step: int = -1
    bad_evals: int = 0
    stopped: str = ""


class Progress:
    """A rich progress bar (loss, val BPB, bytes/s, ETA), or nothing when disabled / not a terminal."""

    def __init__(self, enabled: bool, total: float, desc: str):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(desc, total=total, info="")

    def update(self, completed: float, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _save_trainer(path: Path, optimizer: optim.Optimizer, state: TrainerState) -> None:
    mx.save_safetensors(str(path / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    (path / "trainer.json").write_text(json.dumps(asdict(state), indent=2))


def _load_trainer(path: Path, optimizer: optim.Optimizer) -> TrainerState:
    optimizer.state = tree_unflatten(list(mx.load(str(path / "optimizer.safetensors")).items()))
    return TrainerState(**json.loads((path / "trainer.json").read_text()))


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
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    optimizer = make_optimizer(model, cfg)
    st = TrainerState()
    if resume_state is not None:
        st = _load_trainer(resume_state, optimizer)

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
        _save_trainer(out / "last", optimizer, st)
    final = metrics(last_val)
    write_log({"step": st.step, "stopped": st.stopped, "best_val_bpb": final["best_val_bpb"], "elapsed": st.elapsed})
    log.close()
    if cache is not None:
        final["starts_cache"] = {"hits": cache.hits, "misses": cache.misses}
    return final


# ---- stages ----


def _resume_from(cfg: TrainConfig) -> Path | None:
    last = Path(cfg.out_dir) / "last"
    if cfg.resume and (last / "trainer.json").exists() and (last / "optimizer.safetensors").exists():
        return last
    return None


def save_entropy(path: Path, model: nn.Module, cfg: EntropyConfig, metrics: dict[str, Any]) -> None:
    """An entropy-model checkpoint: safetensors weights + JSON config and metrics (no pickle)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "entropy.tmp.safetensors"
    mx.save_safetensors(str(tmp), dict(tree_flatten(model.parameters())))
    os.replace(tmp, path / "entropy.safetensors")
    (path / "entropy_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))


def load_entropy(path: str | Path) -> tuple[nn.Module, EntropyConfig, dict[str, Any]]:
    """Load what save_entropy wrote; `path` is a checkpoint folder or a stage folder holding best/."""
    from blt.entropy import EntropyModel

    p = Path(path)
    if not (p / "entropy.safetensors").exists() and (p / "best" / "entropy.safetensors").exists():
        p = p / "best"
    if not (p / "entropy.safetensors").exists():
        raise FileNotFoundError(f"no entropy model checkpoint in {path} (train the entropy stage first)")
    cfg = EntropyConfig.from_dict(json.loads((p / "entropy_config.json").read_text()))
    model = EntropyModel(cfg)
    model.load_weights(str(p / "entropy.safetensors"), strict=True)
    mx.eval(model.parameters())
    metrics = json.loads((p / "metrics.json").read_text()) if (p / "metrics.json").exists() else {}
    return model, cfg, metrics


def train_entropy(
    train: Sequence[Sample],
    val: Sequence[Sample],
    cfg: TrainConfig,
    *,
    entropy_config: EntropyConfig | None = None,
    size: str = "small",
    command: str = "",
) -> dict[str, Any]:
    """Stage (a): the entropy model as a plain next-byte LM over whole examples (exemplars included)."""
    from blt.entropy import EntropyModel

    cfg = replace(cfg, kind="entropy")
    resume = _resume_from(cfg)
    if resume is not None:
        model, ecfg, _ = load_entropy(resume)
    else:
        ecfg = entropy_config or model_configs(size)[0]
        model = EntropyModel(ecfg)
    mx.eval(model.parameters())
    extra = {
        "params": count_params(model),
        "compute_params": compute_params(model),
        "entropy_config": ecfg.to_dict(),
    }
    return fit(
        model,
        train,
        val,
        cfg,
        save=lambda p, m: save_entropy(p, model, ecfg, m),
        resume_state=resume,
        command=command,
        extra_metrics=extra,
    )


def calibrate_threshold(
    entropy_model: nn.Module,
    examples: Sequence[Example],
    patcher: PatcherConfig,
    target: float = 4.5,
    batch_size: int = 16,
) -> float:
    """The entropy threshold that gives `target` bytes per patch on these examples (bisection)."""
    from blt.data import eval_batches
    from blt.entropy import entropies
    from blt.patching import patch_starts

    toks, ents = [], []
    for b in eval_batches(examples, batch_size):
        x = b.inputs
        toks.append(x)
        ents.append(np.array(entropies(entropy_model, mx.array(x))))

    def avg_patch(theta: float) -> float:
        pc = replace(patcher, threshold=theta)
        n_bytes = n_patches = 0
        for x, e in zip(toks, ents, strict=True):
            s = np.array(patch_starts(x, pc, e))
            valid = x != PAD
            n_bytes += int(valid.sum())
            n_patches += int((s & valid).sum())
        return n_bytes / max(n_patches, 1)

    lo, hi = 0.0, 8.0
    for _ in range(20):
        mid = (lo + hi) / 2
        if avg_patch(mid) < target:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 4)


def train_blt(
    train: Sequence[Sample],
    val: Sequence[Sample],
    cfg: TrainConfig,
    *,
    entropy_dir: str | Path,
    blt_config: BLTConfig | None = None,
    size: str = "small",
    target_patch: float | None = 4.5,
    command: str = "",
) -> dict[str, Any]:
    """Stage (b): the BLT, patched by the frozen entropy model from `entropy_dir` (starts cached per example).

    With `target_patch` the entropy threshold is calibrated to that mean patch size on the training data.
    """
    from blt.checkpoint import load_checkpoint, save_checkpoint
    from blt.model import BLT

    cfg = replace(cfg, kind="blt")
    resume = _resume_from(cfg)
    if resume is not None:
        ck = load_checkpoint(resume)
        model, bcfg, ent_model = ck.model, ck.config, ck.entropy_model
    else:
        ent_model, ecfg, _ = load_entropy(entropy_dir)
        bcfg = blt_config or model_configs(size, max_bytes=cfg.data.max_len - 1)[1]
        bcfg = replace(bcfg, entropy=ecfg, max_bytes=cfg.data.max_len - 1)
        if target_patch and bcfg.patcher.needs_entropy:
            probe = eval_examples(train[:256], cfg.data.max_len, exemplar_bytes=cfg.data.exemplar_bytes)
            theta = calibrate_threshold(ent_model, probe, bcfg.patcher, target_patch)
            bcfg = replace(bcfg, patcher=replace(bcfg.patcher, threshold=theta))
        model = BLT(bcfg)
    ent_model.eval()
    ent_model.freeze()
    mx.eval(model.parameters())
    starts_fn = make_starts_fn(ent_model, bcfg.patcher)
    extra = {
        "params": count_params(model),
        "compute_params": compute_params(model),
        "patch_threshold": bcfg.patcher.threshold,
    }

    def save(p: Path, m: dict[str, Any]) -> None:
        save_checkpoint(
            p,
            model=model,
            config=bcfg,
            entropy_model=ent_model,
            entropy_config=bcfg.entropy,
            metrics=m,
            kind="blt",
        )

    return fit(
        model,
        train,
        val,
        cfg,
        save=save,
        starts_fn=starts_fn,
        resume_state=resume,
        command=command,
        extra_metrics=extra,
    )


def train_baseline(
    train: Sequence[Sample],
    val: Sequence[Sample],
    cfg: TrainConfig,
    *,
    blt_dir: str | Path | None = None,
    baseline_config: BaselineConfig | None = None,
    target_params: int | None = None,
    command: str = "",
) -> dict[str, Any]:
    """The plain byte transformer, sized to the BLT's parameter count (from `blt_dir` or `target_params`)."""
    from blt.baseline import ByteTransformer
    from blt.checkpoint import load_checkpoint, save_checkpoint

    cfg = replace(cfg, kind="baseline")
    resume = _resume_from(cfg)
    dropout = 0.1
    if resume is not None:
        ck = load_checkpoint(resume)
        model, bc = ck.model, ck.config
    else:
        if baseline_config is None:
            if target_params is None:
                if blt_dir is None:
                    raise ValueError("give baseline_config, target_params or the BLT's stage folder")
                ck = load_checkpoint(Path(blt_dir) / "best")
                target_params, dropout = compute_params(ck.model), ck.config.dropout
            baseline_config = match_baseline(target_params, cfg.data.max_len - 1, dropout)
        bc = replace(baseline_config, max_bytes=cfg.data.max_len - 1)
        model = ByteTransformer(bc)
    mx.eval(model.parameters())
    extra = {
        "params": count_params(model),
        "compute_params": compute_params(model),
        "target_compute_params": target_params,
    }

    def save(p: Path, m: dict[str, Any]) -> None:
        save_checkpoint(p, model=model, config=bc, entropy_model=None, entropy_config=None, metrics=m, kind="baseline")

    return fit(model, train, val, cfg, save=save, resume_state=resume, command=command, extra_metrics=extra)
