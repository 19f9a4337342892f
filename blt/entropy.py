"""The small byte-level entropy model whose next-byte uncertainty places the BLT's patch boundaries."""

from __future__ import annotations

import mlx.core as mx

from blt.baseline import ByteTransformer
from blt.config import EntropyConfig


class EntropyModel(ByteTransformer):
    """A small causal byte transformer with sliding-window attention (no dropout): tokens [B, T] -> next-byte
    logits [B, T, V]. It is the baseline's architecture at another size; only its job differs."""

    def __init__(self, cfg: EntropyConfig):
        super().__init__(cfg)  # type: ignore[arg-type] - same fields that matter; dropout defaults to 0


def entropy_from_logits(logits: mx.array) -> mx.array:
    """Natural-log entropy of softmax(logits) over the last axis."""
    logits = logits.astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return -(mx.exp(logp) * logp).sum(axis=-1)


def entropies(model: EntropyModel, tokens: mx.array) -> mx.array:
    """[B, T] entropy (nats) of the next-byte distribution at each position.

    Every row is its own sequence (attention never crosses rows), so padding or neighbours in the batch
    cannot change a row's entropies; the result is a constant (no gradient flows into the entropy model).
    """
    if tokens.ndim == 1:
        tokens = tokens[None]
    return mx.stop_gradient(entropy_from_logits(model(tokens)))
