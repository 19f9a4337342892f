"""The three training stages: (a) the entropy model, (b) the BLT on patches from the frozen entropy model,
and the byte-transformer baseline of equal compute. Each builds or resumes its model, then runs the shared
loop (blt.loop.fit) in its stage folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from blt.baseline import ByteTransformer
from blt.bpb import make_starts_fn
from blt.checkpoint import load_checkpoint, load_weights, save_checkpoint
from blt.config import BaselineConfig, BLTConfig, EntropyConfig, PatcherConfig
from blt.data import Example, Sample, eval_batches, eval_examples
from blt.entropy import EntropyModel, entropies
from blt.errors import CheckpointError, ConfigError
from blt.layers import compute_params, num_params
from blt.loop import fit
from blt.model import BLT
from blt.patching import patch_starts
from blt.presets import match_baseline, model_configs
from blt.run_state import resume_from
from blt.tokens import PAD
from blt.train_config import TrainConfig

ENTROPY_FILE = "entropy.safetensors"
ENTROPY_CONFIG_FILE = "entropy_config.json"


def save_entropy(path: Path, model: nn.Module, cfg: EntropyConfig, metrics: dict[str, Any]) -> None:
    """An entropy-model checkpoint: safetensors weights + JSON config and metrics (no pickle)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "entropy.tmp.safetensors"
    mx.save_safetensors(str(tmp), dict(tree_flatten(model.parameters())))
    os.replace(tmp, path / ENTROPY_FILE)
    (path / ENTROPY_CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))


def load_entropy(path: str | Path) -> tuple[EntropyModel, EntropyConfig, dict[str, Any]]:
    """Load what save_entropy wrote; `path` is a checkpoint folder or a stage folder holding best/."""
    p = Path(path)
    if not (p / ENTROPY_FILE).exists() and (p / "best" / ENTROPY_FILE).exists():
        p = p / "best"
    if not (p / ENTROPY_FILE).exists():
        raise CheckpointError(f"{path}: no entropy model checkpoint here (train the entropy stage first)")
    cfg_file = p / ENTROPY_CONFIG_FILE
    try:
        cfg = EntropyConfig.from_dict(json.loads(cfg_file.read_text()))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_file}: {e}") from None
    model = load_weights(EntropyModel, cfg, p / ENTROPY_FILE, cfg_file)
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
    cfg = replace(cfg, kind="entropy")
    resume = resume_from(cfg)
    if resume is not None:
        model, ecfg, _ = load_entropy(resume)
    else:
        ecfg = entropy_config or model_configs(size)[0]
        model = EntropyModel(ecfg)
    mx.eval(model.parameters())
    extra = {
        "params": num_params(model),
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
    cfg = replace(cfg, kind="blt")
    resume = resume_from(cfg)
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
        "params": num_params(model),
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

    cfg = replace(cfg, kind="baseline")
    resume = resume_from(cfg)
    dropout = 0.1
    if resume is not None:
        ck = load_checkpoint(resume)
        model, bc = ck.model, ck.config
    else:
        if baseline_config is None:
            if target_params is None:
                if blt_dir is None:
                    raise ConfigError("give baseline_config, target_params or the BLT's stage folder")
                ck = load_checkpoint(Path(blt_dir) / "best")
                target_params, dropout = compute_params(ck.model), ck.config.dropout
            baseline_config = match_baseline(target_params, cfg.data.max_len - 1, dropout)
        bc = replace(baseline_config, max_bytes=cfg.data.max_len - 1)
        model = ByteTransformer(bc)
    mx.eval(model.parameters())
    extra = {
        "params": num_params(model),
        "compute_params": compute_params(model),
        "target_compute_params": target_params,
    }

    def save(p: Path, m: dict[str, Any]) -> None:
        save_checkpoint(p, model=model, config=bc, entropy_model=None, entropy_config=None, metrics=m, kind="baseline")

    return fit(model, train, val, cfg, save=save, resume_state=resume, command=command, extra_metrics=extra)
