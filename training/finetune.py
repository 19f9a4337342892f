"""LoRA (or DoRA) fine-tuning of an MLX chat model through mlx-lm's tuner: resumable, validated, early-stopped.

The model comes from the caller (the same module the MLX backend decodes with); examples come already
tokenized as (ids, offset), the loss on the answer tokens only (ids[offset:]). mlx-lm's `train` runs the
steps (compiled, with its progress display); this module adds what a run on a shared CPU needs around it:
a checkpoint of adapter, optimizer and step every validation (resume continues there), the best adapter by
validation loss, early stopping after `patience` validations without improvement, and a manifest.

Output folder (loadable by mlx-lm's `load_adapters` and by `[mlx] adapter`):
  adapters.safetensors, adapter_config.json   the best adapter (mlx-lm's layout)
  manifest.json                               base model hash, data hash, settings, results
  checkpoint/                                 the last step: adapters, optimizer state, state.json
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.data import TrainingError

MANIFEST_FORMAT = "shvayambhu-lora/1"
TUNE_TYPES = ("lora", "dora")


@dataclass
class FinetuneConfig:
    """What a run is told. Defaults fit SmolLM2-135M on a 2-core CPU in well under an hour (see README)."""

    out_dir: str | Path
    rank: int = 8
    layers: int = 8  # the last N transformer blocks get adapters (fewer blocks: a shorter backward pass)
    scale: float = 20.0  # mlx-lm's LoRA scale (alpha / rank)
    dropout: float = 0.0
    tune_type: str = "lora"
    max_seq: int = 512  # tokens; longer examples are dropped, not truncated (truncation would cut the answer)
    batch_size: int = 4
    steps: int = 300
    lr: float = 1e-4
    eval_every: int = 50
    patience: int = 3  # validations without improvement before stopping (0: never stop early)
    seed: int = 0
    resume: bool = True
    report_every: int = 10  # steps per training-loss report (each logged with its time since the start)

    def __post_init__(self) -> None:
        if self.tune_type not in TUNE_TYPES:
            raise TrainingError(f"tune type must be one of {', '.join(TUNE_TYPES)}, got {self.tune_type!r}")
        for name in ("rank", "layers", "max_seq", "batch_size", "steps", "eval_every", "report_every"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"lr must be a positive number, got {self.lr}")

    def lora_parameters(self) -> dict[str, Any]:
        """mlx-lm's `lora_parameters` for these settings."""
        return {"rank": self.rank, "scale": self.scale, "dropout": self.dropout}

    def shape(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed."""
        return {"rank": self.rank, "layers": self.layers, "scale": self.scale, "tune_type": self.tune_type}


class _Stop(Exception):
    """Raised from the validation callback to end mlx-lm's loop early."""


def file_hash(path: str | Path) -> str:
    """sha256 of a model file, or of a model folder's config and weight files (in name order)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.suffix in (".json", ".safetensors", ".gguf"))
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def tokenize(
    examples: Sequence[Any], chat_ids: Any, encode: Any, end_id: int, max_seq: int
) -> tuple[list[tuple[list[int], int]], int]:
    """(ids, offset) per example, ids = the chat prompt then the target and the end-of-turn token; examples
    longer than `max_seq` are left out (their count is returned)."""
    out, long = [], 0
    for e in examples:
        prompt = chat_ids(e.messages)
        ids = prompt + encode(e.target) + [end_id]
        if len(ids) > max_seq:
            long += 1
            continue
        out.append((ids, len(prompt)))
    return out, long


def apply_lora(model: Any, cfg: FinetuneConfig) -> int:
    """Freeze `model` and give its last `cfg.layers` blocks adapters; returns the trainable parameter count."""
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    if cfg.layers > len(model.layers):
        raise TrainingError(f"the model has {len(model.layers)} layers; --layers {cfg.layers} is more")
    model.freeze()
    linear_to_lora_layers(model, cfg.layers, cfg.lora_parameters(), use_dora=cfg.tune_type == "dora")
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def adapter_config(cfg: FinetuneConfig) -> dict[str, Any]:
    """mlx-lm's adapter_config.json for these settings (what `load_adapters` reads)."""
    return {"fine_tune_type": cfg.tune_type, "num_layers": cfg.layers, "lora_parameters": cfg.lora_parameters()}


def _save_adapter(model: Any, folder: Path, cfg: FinetuneConfig) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config(cfg), indent=2))


def _save_checkpoint(model: Any, optimizer: Any, folder: Path, cfg: FinetuneConfig, state: dict[str, Any]) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    _save_adapter(model, folder, cfg)
    opt = {k: v for k, v in tree_flatten(optimizer.state) if isinstance(v, mx.array)}
    mx.save_safetensors(str(folder / "optimizer.safetensors"), opt)
    (folder / "state.json").write_text(json.dumps(state, indent=2))


def _resume(model: Any, optimizer: Any, folder: Path, cfg: FinetuneConfig, data_hash: str) -> dict[str, Any] | None:
    """Load the checkpoint in `folder` into model and optimizer; its state, or None when there is none."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    path = folder / "state.json"
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if state.get("shape") != cfg.shape() or state.get("data_sha256") != data_hash:
        raise TrainingError(
            f"{folder}: the checkpoint was made with other settings or data ({state.get('shape')}); "
            "give another --out folder, or --no-resume to start again"
        )
    model.load_weights(str(folder / "adapters.safetensors"), strict=False)
    optimizer.init(model.trainable_parameters())
    saved = mx.load(str(folder / "optimizer.safetensors"))
    flat = dict(tree_flatten(optimizer.state))
    flat.update(saved)
    optimizer.state = tree_unflatten(list(flat.items()))
    return state


Tokenized = Sequence[tuple[list[int], int]]


def validate(model: Any, groups: Mapping[str, Tokenized], batch_size: int, max_seq: int) -> dict[str, float]:
    """Mean answer-token loss of each group of examples (every example counted, the last batch may be short)
    and of all of them together under "all"."""
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss, iterate_batches

    model.eval()
    out: dict[str, float] = {}
    total, tokens = 0.0, 0
    for name, data in groups.items():
        data = list(data)
        g_loss, g_toks = mx.array(0.0), mx.array(0)
        for start in range(0, len(data), batch_size):
            chunk = data[start : start + batch_size]
            for batch in iterate_batches(chunk, len(chunk), max_seq):
                loss, toks = default_loss(model, *batch)
                g_loss, g_toks = g_loss + loss * toks, g_toks + toks
                mx.eval(g_loss, g_toks)
        if int(g_toks.item()):
            out[name] = g_loss.item() / g_toks.item()
            total, tokens = total + g_loss.item(), tokens + int(g_toks.item())
    model.train()
    if tokens:
        out["all"] = total / tokens
    return out


def run_finetune(
    model: Any,
    train_set: Tokenized,
    val_set: Tokenized | Mapping[str, Tokenized],
    cfg: FinetuneConfig,
    *,
    data_hash: str,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` (mutated: it gets its adapters) on tokenized examples; writes the output folder and
    returns the run summary (also in manifest.json under "result"). `val_set` may be grouped by example kind:
    the loss of each group is then validated, logged and kept beside the whole's (which picks the best)."""
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches, train

    out = Path(cfg.out_dir)
    ckpt = out / "checkpoint"
    if len(train_set) < cfg.batch_size:
        raise TrainingError(f"{len(train_set)} training examples are fewer than one batch of {cfg.batch_size}")
    mx.random.seed(cfg.seed)
    trainable = apply_lora(model, cfg)
    optimizer = optim.AdamW(learning_rate=cfg.lr, weight_decay=0.0)
    state = _resume(model, optimizer, ckpt, cfg, data_hash) if cfg.resume else None
    state = state or {"step": 0, "best_val": None, "bad_evals": 0, "shape": cfg.shape(), "data_sha256": data_hash}
    start = int(state["step"])
    remaining = cfg.steps - start
    groups = {k: list(v) for k, v in val_set.items()} if isinstance(val_set, Mapping) else {"all": list(val_set)}
    groups = {k: v for k, v in groups.items() if v}
    val_count = sum(len(v) for v in groups.values())
    seen = {"tokens": 0}
    log: list[dict[str, Any]] = list(state.get("log", []))

    def batches(dataset: Any, batch_size: int, max_seq_length: int, loop: bool = False, **kw: Any) -> Any:
        for batch, lengths in iterate_batches(dataset, batch_size, max_seq_length, loop=loop, **kw):
            if loop:  # training batches only: the tokens the model read, prompt included
                seen["tokens"] += int(np.asarray(lengths)[:, 1].sum())
            yield batch, lengths

    def check(step: int) -> None:
        """Validate at `step`: log it, keep the best adapter, checkpoint, stop after `patience` bad ones."""
        t = time.perf_counter()
        losses = validate(model, groups, cfg.batch_size, cfg.max_seq)
        loss = losses["all"]
        kinds = {k: round(v, 4) for k, v in losses.items() if k != "all"}
        log.append({"step": step, "val_loss": loss, "val_by_kind": kinds, "val_seconds": time.perf_counter() - t})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in kinds.items())
        print(f"step {step}: validation loss {loss:.3f} ({shown}) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        best = state["best_val"]
        if best is None or loss < best:
            state.update(best_val=loss, best_step=step, best_by_kind=kinds, bad_evals=0)
            _save_adapter(model, out, cfg)
        elif step > start:
            state["bad_evals"] += 1
        state.update(step=step, log=log, last_val=step)
        if step > start:
            _save_checkpoint(model, optimizer, ckpt, cfg, state)
        if cfg.patience and state["bad_evals"] >= cfg.patience:
            raise _Stop

    class Watch(TrainingCallback):
        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            step = start + int(info["iteration"])
            seconds = round(time.perf_counter() - t0, 3)
            loss = float(info["train_loss"])
            log.append({"step": step, "train_loss": loss, "seconds": seconds, "read": seen["tokens"]})
            read = seen["tokens"]
            print(f"step {step}: training loss {loss:.3f}, {read} tokens read, {seconds:.0f} s", file=sys.stderr)
            if groups and (step - int(state.get("last_val", start)) >= cfg.eval_every or step == cfg.steps):
                check(step)

    stopped = False
    t0 = time.perf_counter()
    if remaining > 0 and groups and start == 0:
        check(0)  # the base model's loss (the adapters start at zero)
    if remaining > 0:
        np.random.seed(cfg.seed + start)  # mlx-lm shuffles batches with numpy's global generator
        args = TrainingArgs(
            batch_size=cfg.batch_size,
            iters=remaining,
            val_batches=-1,
            steps_per_report=min(cfg.report_every, cfg.eval_every, remaining),
            steps_per_eval=10**9,  # validation is ours (per kind of example), run from the loss report
            steps_per_save=10**9,  # checkpoints are ours (with the optimizer and step), at each validation
            max_seq_length=cfg.max_seq,
            adapter_file=str(ckpt / "adapters.safetensors"),
        )
        ckpt.mkdir(parents=True, exist_ok=True)
        try:
            train(
                model=model,
                optimizer=optimizer,
                train_dataset=list(train_set),
                val_dataset=None,
                args=args,
                iterate_batches=batches,
                training_callback=Watch(),
            )
            state["step"] = cfg.steps
        except _Stop:
            stopped = True
        state["log"] = log
        _save_checkpoint(model, optimizer, ckpt, cfg, state)
    seconds = time.perf_counter() - t0
    if state["best_val"] is None:  # no validation set: the last adapter is the one kept
        _save_adapter(model, out, cfg)
    result = {
        "steps": state["step"],
        "resumed_from": start,
        "stopped_early": stopped,
        "best_val_loss": state["best_val"],
        "best_step": state.get("best_step"),
        "best_val_by_kind": state.get("best_by_kind"),
        "train_examples": len(train_set),
        "val_examples": val_count,
        "val_by_kind": {k: len(v) for k, v in groups.items()},
        "trainable_parameters": trainable,
        "seconds": seconds,
        "tokens": seen["tokens"],
        "tokens_per_s": seen["tokens"] / seconds if seconds > 0 and seen["tokens"] else 0.0,
    }
    doc = {
        "format": MANIFEST_FORMAT,
        **(manifest or {}),
        "data": {**(manifest or {}).get("data", {}), "sha256": data_hash},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "adapter": adapter_config(cfg),
        "result": result,
        "log": log,
    }
    (out / "manifest.json").write_text(json.dumps(doc, indent=2, default=str))
    return result
