"""Patch boundaries: which byte positions open a new patch.

Rules (position 0 always opens a patch; BOS and SEP are patches by themselves; no patch is longer than
``max_patch_len``):
  entropy    p+1 opens a patch when H(p) > threshold
  monotonic  p+1 opens a patch when H(p) - H(p-1) > threshold (p >= 1)
  space      p+1 opens a patch when byte p is space-like and byte p+1 is not (runs of spaces stay together)
  static     a patch every ``static_size`` bytes (counted from the start or from after BOS/SEP)
H(p) is the entropy model's next-byte entropy at p, so the boundary at p+1 depends only on bytes <= p
(space: <= p+1); patching a prefix therefore gives the prefix of patching the whole.

``patch_starts`` does a batch at once (training, prefill); ``OnlinePatcher`` makes the same decisions one
byte at a time while decoding.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from blt.config import PatcherConfig
from blt.tokens import BOS, OFFSET, SEP

_ALNUM = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# token id -> space-like: ASCII bytes that are not letters or digits (whitespace, punctuation, symbols).
# Specials and bytes >= 0x80 (parts of multi-byte UTF-8 characters) are not space-like.
_SPACE_LIKE = np.zeros(256 + OFFSET, dtype=bool)
for _b in range(128):
    _SPACE_LIKE[_b + OFFSET] = _b not in _ALNUM


def is_space_like(token: int) -> bool:
    """True for ASCII whitespace/punctuation/symbol bytes."""
    return bool(0 <= token < len(_SPACE_LIKE) and _SPACE_LIKE[token])


def patch_starts(tokens, cfg: PatcherConfig, entropies=None) -> mx.array:
    """Bool [B, T] (or [T] for 1-D input), True where a patch begins; ``entropies`` [B, T] is needed by the
    entropy and monotonic rules."""
    tok = np.asarray(tokens)
    one_d = tok.ndim == 1
    if one_d:
        tok = tok[None]
    B, T = tok.shape
    rule = np.zeros((B, T), dtype=bool)
    if cfg.needs_entropy:
        if entropies is None:
            raise ValueError(f"patcher kind {cfg.kind!r} needs entropies from the entropy model")
        H = np.asarray(entropies, dtype=np.float32).reshape(B, T)
        theta = np.float32(cfg.threshold)  # compare in float32, exactly as OnlinePatcher does
        if cfg.kind == "entropy":
            rule[:, 1:] = H[:, :-1] > theta
        else:
            rule[:, 2:] = (H[:, 1:-1] - H[:, :-2]) > theta
    elif cfg.kind == "space":
        space = _SPACE_LIKE[np.clip(tok, 0, len(_SPACE_LIKE) - 1)]
        rule[:, 1:] = space[:, :-1] & ~space[:, 1:]
    special = (tok == BOS) | (tok == SEP)
    base = rule | special
    base[:, 1:] |= special[:, :-1]
    base[:, 0] = True
    # A forced start every `limit` bytes within each run between rule starts caps the patch length.
    limit = cfg.static_size if cfg.kind == "static" else cfg.max_patch_len
    pos = np.arange(T)[None, :]
    run_start = np.maximum.accumulate(np.where(base, pos, 0), axis=1)
    starts = (pos - run_start) % limit == 0
    return mx.array(starts[0] if one_d else starts)


def patch_ids(starts: mx.array) -> mx.array:
    """[B, T] int32 index of the patch each position belongs to (0-based; position 0 is always in patch 0)."""
    s = starts.astype(mx.int32)
    return mx.maximum(mx.cumsum(s, axis=-1) - 1, 0)


class OnlinePatcher:
    """Decides, one byte at a time, whether the next byte opens a patch (same rules as ``patch_starts``)."""

    def __init__(self, cfg: PatcherConfig):
        self.cfg = cfg
        self.limit = cfg.static_size if cfg.kind == "static" else cfg.max_patch_len
        self.reset()

    def reset(self) -> None:
        self.position = 0
        self.prev_token: int | None = None
        self.prev_entropy: float | None = None  # H(p-1), for the monotonic rule
        self.run_len = 0  # bytes since the last rule start

    def push(self, token: int, entropy_before: float | None = None) -> bool:
        """Append ``token``; return True when it opens a patch. ``entropy_before`` is H at the previous
        position (needed by the entropy rules for every byte but the first)."""
        cfg = self.cfg
        if self.position == 0:
            base = True
        else:
            base = token in (BOS, SEP) or self.prev_token in (BOS, SEP)
            if cfg.needs_entropy:
                if entropy_before is None:
                    raise ValueError(f"patcher kind {cfg.kind!r} needs the entropy at the previous position")
                theta = np.float32(cfg.threshold)
                if cfg.kind == "entropy":
                    base = base or bool(np.float32(entropy_before) > theta)
                elif self.prev_entropy is not None:
                    base = base or bool(np.float32(entropy_before) - np.float32(self.prev_entropy) > theta)
            elif cfg.kind == "space":
                base = base or (is_space_like(self.prev_token) and not is_space_like(token))
            self.prev_entropy = entropy_before
        if base:
            self.run_len = 0
        start = self.run_len % self.limit == 0
        self.run_len += 1
        self.position += 1
        self.prev_token = token
        return start
