"""Patch starts for BLT training batches: computed once per example by the frozen entropy model, and the
patch count rounded to a few buckets so that the compiled step meets few shapes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def patch_bucket(starts: np.ndarray, multiple: int) -> int:
    """Most patches in a row of `starts`, rounded up to `multiple` (to T/8 for short rows; at most T)."""
    s = starts.copy()
    s[:, 0] = True
    n = int(s.sum(axis=1).max())
    T = starts.shape[1]
    m = max(8, min(multiple, T // 8))
    return min(-(-n // m) * m, T)


class StartsCache:
    """Patch starts per example row (keyed by its padded bytes), computed once by the frozen entropy model."""

    def __init__(self, starts_fn: Callable[[np.ndarray], np.ndarray], max_items: int = 200_000):
        self.fn, self.max_items = starts_fn, max_items
        self.rows: dict[bytes, np.ndarray] = {}
        self.hits = self.misses = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        keys = [row.tobytes() for row in x]
        missing = [i for i, k in enumerate(keys) if k not in self.rows]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            got = self.fn(x[missing])
            if len(self.rows) + len(missing) > self.max_items:
                self.rows.clear()
            for j, i in enumerate(missing):
                self.rows[keys[i]] = got[j]
        return np.stack([self.rows[k] for k in keys])
