"""The small byte-level entropy model whose next-byte uncertainty places the BLT's patch boundaries."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from blt.config import EntropyConfig
from blt.layers import Block, KVCache


class EntropyModel(nn.Module):
    """Causal byte transformer with sliding-window attention: tokens [B, T] -> next-byte logits [B, T, V]."""

    def __init__(self, cfg: EntropyConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = [
            Block(cfg.dim, cfg.n_heads, cfg.window, cfg.mlp_mult, 0.0, cfg.rope_base)
            for _ in range(cfg.n_layers)
        ]
        self.norm = nn.RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def make_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.layers]

    def __call__(self, tokens: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, None if cache is None else cache[i])
        return self.head(self.norm(x)).astype(mx.float32)


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
