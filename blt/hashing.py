"""Row ids of the hashed n-gram byte embeddings (BLT paper section 3.2.1): a rolling hash that cannot overflow.

For each n in [ngram_min, ngram_max] and each position t, the n bytes ending at t are hashed with a
polynomial hash  h = sum_i tok[t-i] * BASE^i  (mod MODULUS), positions before the start reading as PAD,
and h mod rows picks a row of that n's table. All arithmetic is int32 with MODULUS < 2^31 / 260, so no
intermediate can overflow, and nothing depends on Python's salted hash(): ids are identical across runs,
processes and platforms. The embedding tables that these ids index are blt.hash_embedding.HashNgramEmbedding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blt.tokens import VOCAB_SIZE

if TYPE_CHECKING:
    import mlx.core as mx

MODULUS = 4_194_301  # prime; (MODULUS - 1) * VOCAB_SIZE < 2^31, so every sum below fits in int32
BASE = 1_000_003  # prime multiplier, reduced mod MODULUS


def _powers(n: int) -> list[int]:
    """BASE^i mod MODULUS for i < n, computed with Python ints (exact)."""
    out, p = [], 1
    for _ in range(n):
        out.append(p)
        p = (p * BASE) % MODULUS
    return out


def ngram_hashes(tokens: mx.array, ngram_min: int, ngram_max: int) -> mx.array:
    """[B, T, K] int32 hashes in [0, MODULUS) of the n-grams ending at each position, n = min..max."""
    import mlx.core as mx  # heavy: importing this module stays free of mlx (and of its BLAS)

    assert (MODULUS - 1) * VOCAB_SIZE < 2**31
    tokens = tokens.astype(mx.int32)
    B, T = tokens.shape
    coef = _powers(ngram_max)
    h = tokens  # n = 1
    out = []
    for n in range(1, ngram_max + 1):
        if n > 1:
            shift = n - 1
            if shift < T:
                prev = mx.concatenate([mx.zeros((B, shift), mx.int32), tokens[:, : T - shift]], axis=1)
                h = (h + prev * coef[shift]) % MODULUS
        if n >= ngram_min:
            out.append(h)
    return mx.stack(out, axis=-1)


def hash_ids(tokens: mx.array, ngram_min: int, ngram_max: int, rows: int) -> mx.array:
    """[B, T, K] row ids into the tables; table k (n = ngram_min + k) owns rows k*rows..(k+1)*rows-1."""
    import mlx.core as mx  # heavy: as in ngram_hashes

    k = ngram_max - ngram_min + 1
    return ngram_hashes(tokens, ngram_min, ngram_max) % rows + mx.arange(k, dtype=mx.int32) * rows
