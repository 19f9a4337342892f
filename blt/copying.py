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

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from blt.errors import GenerationError
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


class ExemplarCopier:
    """Retrieval-interpolated decoding: kNN-LM (Khandelwal et al., 2020) with an LZ77 match in place of the
    vector search. Where the end of the output matches retrieved text for at least ``min_match`` bytes, the
    bytes that followed the longest such matches form a copy distribution, mixed into the model's as
    ``(1 - weight) * p_model + weight * p_copy``; elsewhere the model's distribution is left alone.

    A small byte model keeps to an exemplar for a few words and then drifts; the mixture keeps it there
    while the match holds and lets the model bridge the gaps (a paraphrase, the question's own words).
    ``sources`` are token ids of the retrieved responses, least relevant first; the output may begin where
    the last (the most relevant) begins, and joins any other where it matches. O(source bytes) a step.
    """

    def __init__(self, sources: Sequence[Sequence[int]], weight: float, min_match: int = 4):
        if not 0.0 <= weight <= 1.0:
            raise GenerationError(f"copy weight must be in [0, 1], got {weight}")
        self.weight, self.min_match = float(weight), max(1, int(min_match))
        src: list[int] = []
        starts: list[int] = []
        for s in sources:
            if len(s):
                starts.append(len(src))
                src.extend(int(t) for t in s)
                src.append(-1)  # a sentinel: no match runs from one source into the next
        self.src = np.array(src, dtype=np.int64)
        # run[j]: bytes of output matched by the source bytes just before j (so src[j] would come next)
        self.run = np.zeros(len(src), dtype=np.int64)
        if starts:
            self.run[starts[-1]] = self.min_match

    def push(self, token: int) -> None:
        """Extend every match by the emitted ``token``; those that disagree end."""
        if self.src.size:
            grown = np.where(self.src[:-1] == token, self.run[:-1] + 1, 0)
            self.run[0] = 0
            self.run[1:] = grown

    def proposal(self) -> tuple[np.ndarray, int]:
        """(token ids, longest match length): what followed the longest current matches, or none."""
        if not self.src.size:
            return np.zeros(0, dtype=np.int64), 0
        best = int(self.run.max())
        if best < self.min_match:
            return np.zeros(0, dtype=np.int64), best
        nxt = self.src[self.run == best]
        return nxt[nxt >= 0], best

    def mix(self, logits: np.ndarray) -> np.ndarray:
        """Log-probabilities of the mixture for next-token ``logits`` [V] (unchanged where nothing matches)."""
        ids, _ = self.proposal()
        if self.weight == 0.0 or ids.size == 0:
            return logits
        z = np.asarray(logits, dtype=np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        q = np.bincount(ids, minlength=p.size)[: p.size].astype(np.float64)
        mixed = (1.0 - self.weight) * p + self.weight * q / q.sum()
        with np.errstate(divide="ignore"):
            return np.log(mixed)
