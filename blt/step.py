"""The optimiser and the compiled training step: AdamW (0.9, 0.95) with weight decay, linear warmup then
cosine decay of the learning rate, masked mean cross-entropy, gradient clipping."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from blt.train_config import TrainConfig


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_steps, then cosine from lr to lr * min_lr_ratio as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    p = min(max(progress, 0.0), 1.0)
    cos = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return cfg.lr * warm * cos


def masked_mean_ce(logits: mx.array, targets: mx.array, mask: mx.array) -> mx.array:
    """Mean cross-entropy over the positions where mask is 1 (in float32 whatever the logits' dtype)."""
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none")
    return (ce * mask).sum() / mx.maximum(mask.sum(), 1.0)


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
