"""The settings of one training stage: optimisation, budgets, evaluation and bookkeeping."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from blt.data import DataConfig
from blt.errors import ConfigError

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
            raise ConfigError(f"TrainConfig.kind must be one of {KINDS}, not {self.kind!r}")
        if self.max_steps is None and self.max_minutes is None:
            raise ConfigError("give a step budget (max_steps) or a time budget (max_minutes)")
        if isinstance(self.data, dict):
            self.data = DataConfig(**{k: tuple(v) if k == "formats" else v for k, v in self.data.items()})
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
