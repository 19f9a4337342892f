"""Model sizes (tiny for tests, small for a 2-core CPU, base for Apple Silicon or a GPU), the training
defaults of each stage and size, and the byte-transformer baseline matched to a BLT's compute."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from blt.baseline import ByteTransformer
from blt.config import BaselineConfig, BLTConfig, EntropyConfig, PatcherConfig
from blt.data import DataConfig
from blt.errors import ConfigError
from blt.layers import compute_params
from blt.train_config import TrainConfig

SIZES = ("tiny", "small", "base")
DEFAULT_MAX_BYTES = {"tiny": 256, "small": 1024, "base": 2048}


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
        raise ConfigError(f"unknown size {size!r}: use {', '.join(SIZES)}")
    return ent, cfg


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
