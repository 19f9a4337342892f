"""Durable append-only JSONL: whole-line writes, torn-line repair, the keys already done, one writer a file."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from rag.synthesis.config import SynthesisError
from rag.synthesis.prompts import job_key


def repair_jsonl(path: str | Path) -> int:
    """Cut a torn or unreadable tail off `path` (a line without its newline, or one that is not JSON).

    Returns the number of bytes removed. Only the end is touched: append-only writers tear nothing else.
    """
    path = Path(path)
    if not path.exists():
        return 0
    removed = 0
    with open(path, "r+b") as f:
        while True:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                break
            start = _last_line_start(f, size)
            f.seek(start)
            tail = f.read(size - start)
            if tail.endswith(b"\n") and _parses(tail):
                break
            f.truncate(start)
            removed += size - start
        if removed:
            f.flush()
            os.fsync(f.fileno())
    return removed


def _last_line_start(f: Any, size: int) -> int:
    """Offset where the file's last line begins (a final newline belongs to that line)."""
    end = size - 1  # skip the last byte: if it is the newline, it ends the last line
    block = 65536
    while end > 0:
        lo = max(0, end - block)
        f.seek(lo)
        chunk = f.read(end - lo)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        end = lo
    return 0


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def read_done_keys(*paths: str | Path) -> tuple[set[tuple[str, str]], int]:
    """The (prompt, model) keys already present in the JSONL files, and how many lines could not be read."""
    keys: set[tuple[str, str]] = set()
    bad = 0
    for path in paths:
        if not Path(path).exists():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    keys.add(job_key(obj["prompt"], obj["model"]))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    bad += 1
    return keys, bad


class JsonlAppender:
    """Append-only JSONL: one ``os.write`` a line; fsync at most every `fsync_interval` s (0: every line).

    With `lock`, an exclusive advisory lock keeps a second writer out; with `lazy`, the file is only created
    by the first write.
    """

    def __init__(
        self, path: str | Path, fsync_interval: float = 1.0, *, lock: bool = False, lazy: bool = False
    ) -> None:
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self.fd = -1
        self._lock = lock
        self._last_sync = time.monotonic()
        self._dirty = False
        if not lazy:
            self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self._lock and not _try_lock(fd):
            os.close(fd)
            raise SynthesisError(
                f"another `shvayambhu generate` is writing {self.path}; wait for it to finish or pick another --out"
            )
        self.fd = fd
        if created:
            _fsync_dir(self.path.parent)

    def write(self, obj: dict[str, Any]) -> None:
        """Append `obj` as one whole line."""
        if self.fd < 0:
            self._open()
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # a short write is rare (full disk); a torn tail is repaired on the next run
            view = view[os.write(self.fd, view) :]
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        """fsync what was written since the last sync."""
        if self._dirty:
            os.fsync(self.fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync and close."""
        if self.fd >= 0:
            self.sync()
            os.close(self.fd)
            self.fd = -1


def _try_lock(fd: int) -> bool:
    """Lock `fd` exclusively (advisory; freed when it closes, even on kill -9); True if unsupported."""
    try:
        from index.lock import flock
    except ImportError:  # Windows: no fcntl
        return True
    try:
        return flock(fd, wait=False)
    except OSError:  # a file system without flock
        return False


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rejected_path(out: str | Path) -> Path:
    """Where rejected answers go: ``corpus.jsonl`` -> ``corpus.rejected.jsonl``."""
    out = Path(out)
    if out.suffix == ".jsonl":
        return out.with_suffix(".rejected.jsonl")
    return out.with_name(out.name + ".rejected.jsonl")
