"""The Byte Latent Transformer (Pagnoni et al., 2024), sized for a CPU.

    bytes --(byte + hashed n-gram + copy embeddings)--> local encoder (causal, sliding window)
          --(per-patch cross-attention pooling)--> global transformer over patches (causal)
          --(bytes cross-attend to the previous patch's global output)--> local decoder --> next-byte logits

Causality: the encoder is causal over bytes; patch j is pooled from its own bytes only; the global model is
causal over patches; a byte in patch j reads the global output of patch j-1 (patch 0 reads a learned null
state), which was computed from bytes that all precede it. So the logits at byte t depend on bytes <= t and
on the patch starts <= t only, and right-padding a batch never changes the logits of real positions.

Residuals: each cross-attention adds its output to its query stream exactly once (q + attn(q, kv)).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from blt.config import BLTConfig
from blt.copying import CopyEmbedding
from blt.hash_embedding import HashNgramEmbedding
from blt.layers import Block, KVCache, num_params
from blt.patching import patch_ids

__all__ = ["BLT", "num_params"]


class PatchPooler(nn.Module):
    """Encoder side: one query per patch, the max-pool of the patch's byte states, attends to those bytes
    only; the result (query + attention, one residual) is projected to the global width.

    Segment operations (scatter max/add over patch ids) keep the cost O(bytes), whatever the patch lengths.
    """

    def __init__(self, dim: int, n_heads: int, out_dim: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.q_norm = nn.RMSNorm(dim)
        self.kv_norm = nn.RMSNorm(dim)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, out_dim, bias=False)

    def __call__(self, h: mx.array, pid: mx.array, n_patches: int) -> mx.array:
        B, T, D = h.shape
        P, H, hd = n_patches, self.n_heads, self.head_dim
        rows = mx.arange(B)[:, None]
        pooled = mx.full((B, P, D), -mx.inf, dtype=h.dtype).at[rows, pid].maximum(h)
        pooled = mx.where(mx.isinf(pooled), 0.0, pooled)  # patches past a row's end hold no bytes
        q = self.wq(self.q_norm(pooled)).reshape(B, P, H, hd)
        kv = self.wkv(self.kv_norm(h)).reshape(B, T, 2, H, hd)
        k, v = kv[:, :, 0], kv[:, :, 1]
        q_per_byte = mx.take_along_axis(q, pid[:, :, None, None], axis=1)  # [B, T, H, hd]
        scores = (q_per_byte * k).sum(axis=-1) * (1.0 / math.sqrt(hd))  # [B, T, H]
        # softmax over the bytes of each patch
        top = mx.full((B, P, H), -mx.inf, dtype=scores.dtype).at[rows, pid].maximum(mx.stop_gradient(scores))
        w = mx.exp(scores - mx.take_along_axis(top, pid[:, :, None], axis=1))
        den = mx.zeros((B, P, H), dtype=w.dtype).at[rows, pid].add(w)
        num = mx.zeros((B, P, H, hd), dtype=v.dtype).at[rows, pid].add(w[..., None] * v)
        o = num / mx.maximum(den, 1e-30)[..., None]
        return self.proj(pooled + self.wo(o.reshape(B, P, D)))


class DecoderCrossAttention(nn.Module):
    """Decoder side: every byte attends to the ``k`` key/value slots made from the global output of the patch
    before its own (one residual)."""

    def __init__(self, dim: int, n_heads: int, global_dim: int, k: int):
        super().__init__()
        self.n_heads, self.head_dim, self.k = n_heads, dim // n_heads, k
        self.norm = nn.RMSNorm(dim)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(global_dim, 2 * k * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def slots(self, g: mx.array) -> tuple[mx.array, mx.array]:
        """Keys and values [B, P, heads, k, head_dim] from the per-patch states g [B, P, global_dim]."""
        B, P, _ = g.shape
        kv = self.wkv(g).reshape(B, P, 2, self.k, self.n_heads, self.head_dim).transpose(2, 0, 1, 4, 3, 5)
        return kv[0], kv[1]

    def __call__(self, x: mx.array, slots: tuple[mx.array, mx.array], pid: mx.array) -> mx.array:
        B, T, D = x.shape
        H, hd, k = self.n_heads, self.head_dim, self.k
        ks, vs = slots
        P = ks.shape[1]
        if P == 1:  # incremental decoding: every byte reads the same patch
            ks = mx.broadcast_to(ks, (B, T, H, k, hd))
            vs = mx.broadcast_to(vs, (B, T, H, k, hd))
        else:
            flat = (pid + (mx.arange(B) * P)[:, None]).reshape(-1)
            ks, vs = ks.reshape(B * P, H, k, hd)[flat], vs.reshape(B * P, H, k, hd)[flat]
        q = self.wq(self.norm(x)).reshape(B * T, H, 1, hd)
        o = mx.fast.scaled_dot_product_attention(
            q, ks.reshape(B * T, H, k, hd), vs.reshape(B * T, H, k, hd), scale=1.0 / math.sqrt(hd)
        )
        return x + self.wo(o.reshape(B, T, D))


class DecoderLayer(nn.Module):
    """Cross-attention to the previous patch, then a causal sliding-window byte block."""

    def __init__(self, cfg: BLTConfig):
        super().__init__()
        self.cross = DecoderCrossAttention(cfg.dec_dim, cfg.dec_heads, cfg.global_dim, cfg.cross_k)
        self.block = Block(cfg.dec_dim, cfg.dec_heads, cfg.local_window, cfg.mlp_mult, cfg.dropout, cfg.rope_base)

    def __call__(self, x, slots, pid, cache: KVCache | None = None) -> mx.array:
        return self.block(self.cross(x, slots, pid), cache)


class BLT(nn.Module):
    """Byte Latent Transformer: ``model(tokens [B, T] int32, starts [B, T] bool) -> logits [B, T, V]``.

    ``starts`` marks the first byte of each patch (``blt.patching.patch_starts``); position 0 is always
    treated as a start, and no patch may be longer than ``cfg.patcher.max_patch_len``.
    """

    def __init__(self, cfg: BLTConfig):
        super().__init__()
        self.cfg = cfg
        De, Dg, Dd = cfg.enc_dim, cfg.global_dim, cfg.dec_dim
        self.byte_embed = nn.Embedding(cfg.vocab_size, De)
        self.hash_embed = HashNgramEmbedding(De, cfg.ngram_min, cfg.ngram_max, cfg.hash_rows)
        self.copy_embed = CopyEmbedding(De, cfg.copy_ngrams) if cfg.copy_ngrams else None
        self.encoder = [
            Block(De, cfg.enc_heads, cfg.local_window, cfg.mlp_mult, cfg.dropout, cfg.rope_base)
            for _ in range(cfg.enc_layers)
        ]
        self.pooler = PatchPooler(De, cfg.enc_heads, Dg)
        self.global_layers = [
            Block(Dg, cfg.global_heads, None, cfg.mlp_mult, cfg.dropout, cfg.rope_base)
            for _ in range(cfg.global_layers)
        ]
        self.global_norm = nn.RMSNorm(Dg)
        self.null_patch = 0.02 * mx.random.normal((Dg,))  # what bytes of the first patch read
        self.dec_in = nn.Linear(De, Dd, bias=False) if De != Dd else None
        self.decoder = [DecoderLayer(cfg) for _ in range(cfg.dec_layers)]
        self.norm = nn.RMSNorm(Dd)
        self.head = nn.Linear(Dd, cfg.vocab_size, bias=False)

    # -- the stages, shared by the whole-sequence pass and incremental decoding --
    def make_cache(self) -> dict[str, list[KVCache]]:
        return {
            "encoder": [KVCache() for _ in self.encoder],
            "global": [KVCache() for _ in self.global_layers],
            "decoder": [KVCache() for _ in self.decoder],
        }

    def encode(
        self,
        tokens: mx.array,
        cache: list[KVCache] | None = None,
        context: mx.array | None = None,
        copy_proposals: mx.array | None = None,
    ):
        """Byte states [B, T, enc_dim]; ``context``: the tokens just before ``tokens`` (for the hashes);
        ``copy_proposals``: their copy features when the caller tracks them (blt.copying.CopyIndex), else
        they are searched for in ``tokens`` itself."""
        x = self.byte_embed(tokens) + self.hash_embed(tokens, context)
        if self.copy_embed is not None:
            x = x + (self.copy_embed(tokens) if copy_proposals is None else self.copy_embed.lookup(copy_proposals))
        for i, layer in enumerate(self.encoder):
            x = layer(x, None if cache is None else cache[i])
        return x

    def run_global(self, x: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        """Global outputs [B, P, global_dim] (normalised) for the patch embeddings ``x``."""
        for i, layer in enumerate(self.global_layers):
            x = layer(x, None if cache is None else cache[i])
        return self.global_norm(x)

    def prev_patch_states(self, g: mx.array) -> mx.array:
        """[B, P, Dg]: entry j is the global output of patch j-1 (the null state for j = 0)."""
        B, _, Dg = g.shape
        null = mx.broadcast_to(self.null_patch.astype(g.dtype), (B, 1, Dg))
        return mx.concatenate([null, g[:, :-1]], axis=1)

    def decoder_slots(self, prev: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Per decoder layer, the cross-attention keys/values of the per-patch states ``prev`` [B, P, Dg]."""
        return [layer.cross.slots(prev) for layer in self.decoder]

    def decode(self, h, slots, pid, cache: list[KVCache] | None = None) -> mx.array:
        """Next-byte logits [B, T, V] float32 from byte states h and each byte's previous-patch slots."""
        x = h if self.dec_in is None else self.dec_in(h)
        for i, layer in enumerate(self.decoder):
            x = layer(x, slots[i], pid, None if cache is None else cache[i])
        return self.head(self.norm(x)).astype(mx.float32)

    # -- whole sequence --
    def __call__(self, tokens: mx.array, starts: mx.array, n_patches: int | None = None) -> mx.array:
        """Logits [B, T, V]. ``n_patches`` (>= the largest number of patches in a row) fixes the global
        sequence length, e.g. to a bucket for ``mx.compile``; by default it is counted (a device sync)."""
        if not isinstance(tokens, mx.array) or not isinstance(starts, mx.array):  # NumPy input
            tokens, starts = mx.array(tokens), mx.array(starts)
        T = tokens.shape[1]
        starts = starts.astype(mx.bool_) | (mx.arange(T) == 0)
        pid = patch_ids(starts)
        if n_patches is None:
            n_patches = self.count_patches(starts)
        pid = mx.minimum(pid, n_patches - 1)  # a too-small n_patches must not index out of bounds
        h = self.encode(tokens)
        g = self.run_global(self.pooler(h, pid, n_patches))
        return self.decode(h, self.decoder_slots(self.prev_patch_states(g)), pid)

    def count_patches(self, starts: mx.array) -> int:
        """Largest number of patches in a row; raises ValueError if a patch exceeds ``max_patch_len``."""
        s = np.array(starts, dtype=bool).copy()
        s[:, 0] = True
        limit = self.cfg.patcher.max_patch_len
        for row in s:
            pos = np.flatnonzero(row)
            longest = int(np.diff(np.append(pos, len(row))).max())
            if longest > limit:
                raise ValueError(f"a {longest}-byte patch exceeds max_patch_len={limit}; use patch_starts()")
        return int(s.sum(axis=1).max())
