"""Copy features: for each byte, the byte that followed the last earlier occurrence of its n-byte context.

A small byte model trained on a small corpus learns to memorise long before it learns, by attention alone,
to find the place in a retrieved exemplar that it is re-telling and to continue from there (an induction
head over patches). This module hands it that lookup, as LZ77 does for a compressor: at position t, the
n bytes ending at t are matched (by their polynomial hash, blt.hashing) against every earlier position
s < t, and the byte at s + 1 of the most recent match is embedded and added to the byte's input. The
model learns when to trust it. Only bytes <= t are read, so causality holds, and right padding never
changes real positions (padding only comes after them).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from blt.hashing import BASE, MODULUS, ngram_hashes
from blt.tokens import VOCAB_SIZE

NO_MATCH = VOCAB_SIZE  # the proposal id of a position whose context never occurred before


def match_next(tokens: mx.array, n: int, q_len: int | None = None) -> mx.array:
    """[B, q_len] int32 for the last q_len positions of ``tokens`` [B, T]: the token after the most recent
    earlier occurrence of the n tokens ending at that position, or NO_MATCH. Cost O(q_len * T)."""
    B, T = tokens.shape
    q = T if q_len is None else q_len
    tokens = tokens.astype(mx.int32)
    h = ngram_hashes(tokens, n, n)[..., 0]  # [B, T]
    t_pos = mx.arange(T - q, T)[:, None]
    s_pos = mx.arange(T)[None, :]
    valid = (s_pos < t_pos) & (s_pos >= n - 1) & (t_pos >= n - 1)  # whole n-grams, strictly earlier
    same = (h[:, T - q :, None] == h[:, None, :]) & valid
    last = mx.max(mx.where(same, s_pos, -1), axis=-1)  # [B, q]
    follow = mx.take_along_axis(tokens, mx.maximum(last + 1, 0), axis=1)  # last + 1 <= t: already seen
    return mx.where(last >= 0, follow, NO_MATCH)


class CopyIndex:
    """match_next one token at a time, O(1) each: for incremental decoding, where re-hashing the whole
    history for every new byte would cost O(T). ``push`` returns the same ids as a full pass."""

    def __init__(self, ngrams: tuple[int, ...]):
        self.ngrams = tuple(ngrams)
        self.powers = [[pow(BASE, i, MODULUS) for i in range(n)] for n in self.ngrams]
        self.last: list[dict[int, int]] = [{} for _ in self.ngrams]  # n-gram hash -> latest end position
        self.tokens: list[int] = []

    def push(self, token: int) -> list[int]:
        """Append ``token``; its proposal for each n (NO_MATCH when its context never occurred before)."""
        self.tokens.append(int(token))
        t, toks, out = len(self.tokens) - 1, self.tokens, []
        for i, n in enumerate(self.ngrams):
            if t < n - 1:
                out.append(NO_MATCH)
                continue
            h = sum(toks[t - j] * p for j, p in enumerate(self.powers[i])) % MODULUS
            s = self.last[i].get(h)
            out.append(NO_MATCH if s is None else toks[s + 1])
            self.last[i][h] = t
        return out


class CopyEmbedding(nn.Module):
    """Sum over the configured n of an embedding of each position's proposed next byte (match_next)."""

    def __init__(self, dim: int, ngrams: tuple[int, ...], init_scale: float = 0.5):
        super().__init__()
        self.ngrams = tuple(ngrams)
        self.table = nn.Embedding((VOCAB_SIZE + 1) * len(self.ngrams), dim)
        self.table.weight = init_scale * self.table.weight

    def lookup(self, proposals: mx.array) -> mx.array:
        """[B, T, dim] from proposals [B, T, len(ngrams)] (match_next ids, or CopyIndex.push results)."""
        offsets = mx.arange(len(self.ngrams), dtype=mx.int32) * (VOCAB_SIZE + 1)
        return self.table(proposals.astype(mx.int32) + offsets).sum(axis=2)

    def __call__(self, tokens: mx.array, context: mx.array | None = None) -> mx.array:
        """[B, T, dim] for ``tokens``; ``context`` ([B, c], the tokens before them) is searched too."""
        T = tokens.shape[1]
        if context is not None and context.shape[1] > 0:
            tokens = mx.concatenate([context.astype(tokens.dtype), tokens], axis=1)
        return self.lookup(mx.stack([match_next(tokens, n, T) for n in self.ngrams], axis=-1))
