"""What a stage folder keeps for resuming besides the weights: the optimizer state (safetensors) and where
in the data and the budgets the run is (trainer.json), both in `last/`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from blt.train_config import TrainConfig

OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_FILE = "trainer.json"


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


def save_trainer(path: Path, optimizer: optim.Optimizer, state: TrainerState) -> None:
    """Write the optimizer state and the trainer state into the checkpoint folder `path`."""
    mx.save_safetensors(str(path / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
    (path / TRAINER_FILE).write_text(json.dumps(asdict(state), indent=2))


def load_trainer(path: Path, optimizer: optim.Optimizer) -> TrainerState:
    """Restore what save_trainer wrote: the optimizer's state in place, the trainer state returned."""
    optimizer.state = tree_unflatten(list(mx.load(str(path / OPTIMIZER_FILE)).items()))
    return TrainerState(**json.loads((path / TRAINER_FILE).read_text()))


def resume_from(cfg: TrainConfig) -> Path | None:
    """The stage's `last/` folder when resuming is on and it holds a complete run state, else None."""
    last = Path(cfg.out_dir) / "last"
    if cfg.resume and (last / TRAINER_FILE).exists() and (last / OPTIMIZER_FILE).exists():
        return last
    return None
