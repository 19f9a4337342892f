"""One generation at a time per loaded model (MLX is not thread-safe), behind a bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rag.serve.errors import ApiError


class ModelQueue:
    """Per model key: a lock, and a count of requests holding or waiting for it (at most 1 + depth)."""

    def __init__(self, depth: int, retry_after: int) -> None:
        self.depth = depth
        self.retry_after = retry_after
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}

    def check(self, key: str) -> None:
        """503 with Retry-After when `key`'s queue is full; call before doing any work for the request."""
        if self._pending.get(key, 0) >= 1 + self.depth:
            raise ApiError(
                503,
                f"the model {key} is busy: {self.depth} requests are already waiting; retry in "
                f"{self.retry_after} s (queue depth is set by the server's queue_depth)",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after)},
            )

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait for `key`'s lock and hold it; cancelling while waiting or holding frees the place."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._pending[key] = self._pending.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._pending[key] -= 1

    def snapshot(self) -> dict[str, dict[str, int | bool]]:
        """For /v1/status: which models generate now and how many requests wait for each."""
        out: dict[str, dict[str, int | bool]] = {}
        for key, lock in self._locks.items():
            busy = lock.locked()
            out[key] = {"busy": busy, "waiting": max(0, self._pending.get(key, 0) - int(busy))}
        return out
