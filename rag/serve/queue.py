"""One generation at a time per loaded model (MLX is not thread-safe), behind a bounded queue.

A request takes its place at admission, before retrieval and prompt building, and keeps it until its answer
ends or fails: a full queue refuses the next request at once instead of after seconds of retrieval."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rag.serve.errors import ApiError


class Place:
    """One admitted request's place in a model's queue; `release()` frees it (once, however often called)."""

    def __init__(self, queue: ModelQueue, key: str) -> None:
        self.queue = queue
        self.key = key
        self.released = False

    def release(self) -> None:
        """Give the place back: the request finished, failed, or its client went away."""
        if not self.released:
            self.released = True
            self.queue._pending[self.key] -= 1


class ModelQueue:
    """Per model key: a lock, and a count of admitted requests (at most 1 generating + `depth` waiting)."""

    def __init__(self, depth: int, retry_after: int) -> None:
        self.depth = depth
        self.retry_after = retry_after
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}

    def admit(self, key: str) -> Place:
        """A place in `key`'s queue, or 503 with Retry-After when it is full; call before any work."""
        if self._pending.get(key, 0) >= 1 + self.depth:
            raise ApiError(
                503,
                f"the model {key} is busy: {self.depth} requests are already waiting; retry in "
                f"{self.retry_after} s (queue depth is set by the server's queue_depth)",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after)},
            )
        self._pending[key] = self._pending.get(key, 0) + 1
        return Place(self, key)

    @asynccontextmanager
    async def hold(self, place: Place) -> AsyncIterator[None]:
        """Wait for the model's lock and hold it; the place is freed when the block ends or is cancelled."""
        lock = self._locks.setdefault(place.key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            place.release()

    def snapshot(self) -> dict[str, dict[str, int | bool]]:
        """For /v1/status: which models generate now and how many admitted requests wait for each."""
        out: dict[str, dict[str, int | bool]] = {}
        for key in self._locks.keys() | self._pending.keys():
            busy = key in self._locks and self._locks[key].locked()
            out[key] = {"busy": busy, "waiting": max(0, self._pending.get(key, 0) - int(busy))}
        return out
