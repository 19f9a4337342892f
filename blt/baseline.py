"""The comparison point: a plain causal byte transformer built from the same blocks as the BLT."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from blt.config import BaselineConfig, EntropyConfig
from blt.layers import Block, KVCache, num_params

__all__ = ["ByteTransformer", "num_params"]


class ByteTransformer(nn.Module):
    """tokens [B, T] int32 -> next-byte logits [B, T, V] float32; pass ``cache`` to decode incrementally."""

    def __init__(self, cfg: BaselineConfig | EntropyConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = [
            Block(cfg.dim, cfg.n_heads, cfg.window, cfg.mlp_mult, getattr(cfg, "dropout", 0.0), cfg.rope_base)
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
