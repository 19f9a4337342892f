"""Seeded sampling with a key of the request's own: MLX's global generator (`mx.random.seed`) is shared by every
thread of the process, so two requests that seeded it would draw from each other's sequence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def seeded_sampler(temperature: float, seed: int, top_p: float = 0.0, top_k: int = 0) -> Callable[[Any], Any]:
    """An mlx-lm-style sampler (log-probabilities in, token ids out) drawing with `mx.random.key(seed)`, split at
    every step: the same seed gives the same tokens whatever other threads draw meanwhile. Top-p and top-k
    filtering are mlx-lm's own."""
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_top_k, apply_top_p

    key = mx.random.key(seed)

    def sample(logprobs: Any) -> Any:
        nonlocal key
        key, draw = mx.random.split(key)
        if 0.0 < top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        if top_k > 0:
            logprobs = apply_top_k(logprobs, top_k)
        return mx.random.categorical(logprobs * (1.0 / temperature), key=draw)

    return sample
