"""One writer at a time for the embedded store: an advisory `fcntl.flock` on a lock file in the data directory.

Chroma's embedded `PersistentClient` keeps each collection's vector index in the memory of every process that
writes it, so two writing processes overwrite each other's index files and records lose their vectors. Every
writer (ingest, prune, memory writes, forget/clear, training export, restore) takes this lock; readers never
do. A Chroma server serialises writes itself, so a server store needs no lock.

Readers in other processes learn of writes through a generation file the writer touches when it lets go
(`ensure_fresh`, `query_fresh`), and reload their cached indexes. It is touched when the lock is taken too, so
a writer killed mid-write (kill -9 never lets go) still leaves a new generation.

Every process that opens the embedded store holds a shared flock on a second file for as long as it lives
(`hold_open`); `restore` takes it exclusively (`sole_user`), so it refuses while a server or any other process
has the store open instead of replacing files under it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from index.chroma_compat import embedded_folder, is_stale_view, reload_view
from index.errors import ShvayambhuError

LOCK_NAME = "write.lock"
GENERATION_NAME = "write.gen"  # touched by every writer as it takes the lock and lets go: readers reload
OPEN_NAME = "open.lock"  # shared-locked by every process with the store open; restore locks it exclusively
BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class StoreBusy(ShvayambhuError, RuntimeError):
    """Another process is writing to the store and the caller asked not to wait."""


class StoreInUse(StoreBusy):
    """Another process has the store open, so it cannot be replaced (restore)."""


def flock(f: Any, *, exclusive: bool = True, wait: bool = True) -> bool:
    """Take an advisory flock on the open file (or descriptor) `f`, exclusive or shared; it is freed when the file
    closes, also when the process is killed. Without `wait`, False at once when another open file holds it."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(f, mode if wait else mode | fcntl.LOCK_NB)
    except OSError as e:
        if wait or e.errno not in BUSY:
            raise
        return False
    return True


@contextmanager
def locked_file(path: Path, *, exclusive: bool = True) -> Iterator[None]:
    """Hold a flock on the lock file `path` (created if missing) for the block, waiting for it. Each open is its
    own holder, so this orders threads of one process as well as processes."""
    with open(path, "a+") as f:  # "a+" never truncates what a holder wrote into it
        flock(f, exclusive=exclusive)
        yield


def lock_path(data_dir: Path | str) -> Path:
    """The lock file of the store under `data_dir`."""
    return Path(data_dir) / LOCK_NAME


def data_dir_of(client_or_collection: Any) -> Path | None:
    """The data directory of an embedded store (the folder holding `chroma/`), or None for a server store."""
    folder = embedded_folder(client_or_collection)
    return None if folder is None else folder.parent


def refresh(client_or_collection: Any) -> None:
    """Drop this process's cached vector indexes so the next access reads what other writers stored.

    Call it holding the write lock: a writer whose index was loaded before another process wrote would
    otherwise persist its stale copy over the other's vectors. Collections opened before stay usable."""
    reload_view(client_or_collection)


def _generation(data_dir: Path) -> int:
    try:
        return (data_dir / GENERATION_NAME).stat().st_mtime_ns
    except OSError:
        return 0


def ensure_fresh(client_or_collection: Any) -> None:
    """Reload this process's cached vector indexes if another process has written since they were loaded.

    A stat per call. Without it a filtered query of a long-running reader (ask, serve) fails with Chroma's
    stale-view error (`chroma_compat.is_stale_view`) once writers in other processes have moved on."""
    data_dir = data_dir_of(client_or_collection)
    if data_dir is None or _held.get(_key(lock_path(data_dir))):
        return
    gen = _generation(data_dir)
    if _seen.setdefault(str(data_dir), gen) != gen:
        refresh(client_or_collection)
        _seen[str(data_dir)] = gen


def query_fresh(collection: Any, **kwargs: Any) -> Any:
    """`collection.query(**kwargs)` on an up-to-date view, retried once on a fresh one if a writer in another
    process moved on during the call (`chroma_compat.is_stale_view`)."""
    from index.failures import translating

    with translating(collection):
        ensure_fresh(collection)
        try:
            return collection.query(**kwargs)
        except Exception as e:  # chromadb.errors.InternalError
            if not is_stale_view(e) or data_dir_of(collection) is None:
                raise
            refresh(collection)
            return collection.query(**kwargs)


def fresh_count(collection: Any) -> int:
    """`collection.count()`, remembered per collection until the store's generation changes: a stat instead of a
    Chroma round trip (~1 ms) on every hybrid search. Not remembered while this process holds the write lock."""
    from index.failures import translating

    data_dir = data_dir_of(collection)
    if data_dir is None or _held.get(_key(lock_path(data_dir))):
        with translating(collection):
            return int(collection.count())
    gen = _generation(data_dir)
    key = (str(data_dir), str(collection.id))
    cached = _counts.get(key)
    if cached is not None and gen and cached[0] == gen:
        return cached[1]
    with translating(collection):
        n = int(collection.count())
    _counts[key] = (gen, n)
    return n


def hold_open(data_dir: Path | str) -> None:
    """Hold a shared lock on the store's open file for the rest of this process's life, so that `restore` sees
    the store is in use; waits, saying so, while a restore is replacing it. Nothing on a read-only folder."""
    path = Path(data_dir) / OPEN_NAME
    key = _key(path)
    if key in _open_holds:
        return
    try:
        f = open(path, "a+")  # noqa: SIM115 - kept open for the life of the process: the lock is the open file
    except OSError:
        return  # a read-only data directory: nothing can restore into it either
    try:
        if not flock(f, exclusive=False, wait=False):
            print(f"waiting for a restore of the store in {data_dir} to finish...", file=sys.stderr, flush=True)
            flock(f, exclusive=False)
    except OSError:
        f.close()
        raise
    _open_holds[key] = f


def release_open(data_dir: Path | str) -> None:
    """Let go of this process's hold on the store's open file (see `hold_open`)."""
    f = _open_holds.pop(_key(Path(data_dir) / OPEN_NAME), None)
    if f is not None:
        f.close()


@contextmanager
def sole_user(data_dir: Path | str, what: str) -> Iterator[None]:
    """Hold the store's open file exclusively for the block, so that no process opens the store meanwhile;
    raises StoreInUse, naming the processes, when another one has it open. This process's own hold is let go
    for the block (its open clients must not be used across it) and taken again after."""
    path = Path(data_dir) / OPEN_NAME
    mine = _key(path) in _open_holds
    release_open(data_dir)
    try:
        f = _open_lock_file(path)
        try:
            if not flock(f, wait=False):
                raise StoreInUse(
                    f"cannot {what} the store in {data_dir} while {users(path)} has it open: stop "
                    f"{'them' if len(holders(path)) > 1 else 'it'} (Ctrl-C, or `kill PID` for a server), then "
                    f"run the {what} again"
                ) from None
            yield
        finally:
            f.close()
    finally:
        if mine:
            hold_open(data_dir)


def holders(path: Path) -> list[int]:
    """Pids of the other processes holding a flock on `path`, from Linux's /proc/locks ([] where unknown)."""
    try:
        st = path.stat()
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = set()
    for line in lines:
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == dev and parts[4].isdigit():
            pids.add(int(parts[4]))
    pids.discard(os.getpid())
    return sorted(pids)


def users(path: Path) -> str:
    """'pid N (command)' for each process holding `path`, for messages; 'another process' where unknown."""
    named = []
    for pid in holders(path):
        try:
            argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
            cmd = " ".join(" ".join(Path(a).name if "/" in a else a for a in argv[:4] if a).split())
        except OSError:
            cmd = ""
        named.append(f"pid {pid}" + (f" ({cmd[:60]})" if cmd else ""))
    return ", ".join(named) or "another process"


@contextmanager
def store_write_lock(client_or_collection: Any, what: str, wait: bool = True) -> Iterator[None]:
    """`write_lock` for the store a client or collection belongs to, with a fresh view of it once held.

    The view is reloaded only when another process wrote since this one last looked (a reload costs tens of
    ms); after this process's own write it records the generation it left, so its next read needs no reload."""
    data_dir = data_dir_of(client_or_collection)
    with write_lock(data_dir, what, wait=wait):
        outer = data_dir is not None and _depth().get(_key(lock_path(data_dir))) == 1
        if outer and _seen.get(str(data_dir)) != _generation(data_dir):  # another process wrote meanwhile
            refresh(client_or_collection)
        yield


def _key(path: Path) -> str:
    return str(path.resolve()) if path.parent.exists() else str(path)


def _bump(data_dir: Path, ok: bool = True, keep: bool = False) -> None:
    """Tell readers that the store changed (a new mtime on the generation file). After a write that went well,
    remember the generation this process left, so its own next read needs no reload; after a failed one (a full
    disk can leave Chroma's view of the store broken) forget it, so the next access reloads. With `keep` (a
    write begins) remember the new generation only if this process's view was up to date before."""
    gen = data_dir / GENERATION_NAME
    current = _seen.pop(str(data_dir), None) == _generation(data_dir)
    try:
        gen.touch()
        stamp = max(time.time_ns(), _generation(data_dir) + 1)
        os.utime(gen, ns=(time.time_ns(), stamp))
        if ok and (current or not keep):
            _seen[str(data_dir)] = _generation(data_dir)
    except OSError:
        pass  # readers then refresh only on a stale-view error


def _holder(f: Any) -> str:
    """'pid N, what' from the lock file's contents, or 'unknown' while the holder is still writing them."""
    try:
        f.seek(0)
        info = json.loads(f.read() or "{}")
        return f"pid {info['pid']}, {info['what']}"
    except (ValueError, KeyError, OSError):
        return "unknown"


_seen: dict[str, int] = {}  # data dir -> the store generation this process's view of it reflects
_counts: dict[tuple[str, str], tuple[int, int]] = {}  # (data dir, collection id) -> (generation, count)
_open_holds: dict[str, Any] = {}  # open-file path -> the file whose shared flock this process holds
_held: dict[str, int] = {}  # lock path -> 1 while a thread of this process holds it (readers then skip reloads)
_thread_locks: dict[str, threading.Lock] = {}  # lock path -> orders this process's threads before the flock
_local = threading.local()


def _depth() -> dict[str, int]:
    """This thread's re-entry depth per lock path, so a writer that calls another writer does not wait on itself."""
    if not hasattr(_local, "depth"):
        _local.depth = {}
    return _local.depth


@contextmanager
def write_lock(data_dir: Path | str | None, what: str, wait: bool = True) -> Iterator[None]:
    """Hold the store's write lock for the block; a no-op when `data_dir` is None (a server store).

    A second writer waits, saying once on stderr whom it waits for, or with `wait=False` raises StoreBusy.
    Re-entrant within a thread; threads of one process (a server's) take turns before the inter-process flock.
    The lock goes with the process, so a killed writer never leaves it held.
    """
    if data_dir is None:
        yield
        return
    path = lock_path(data_dir)
    key = _key(path)
    depth = _depth()
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    in_process = _thread_locks.setdefault(key, threading.Lock())  # threads first, then processes (flock)
    if not in_process.acquire(blocking=wait):
        raise StoreBusy(
            f"another writer in this process is using the store in {data_dir}; wait for it to finish, or run "
            "again without --no-wait to wait for it"
        )
    try:
        with _flock(path, data_dir, what, wait):
            depth[key], _held[key] = 1, 1
            try:
                yield
            finally:
                del depth[key], _held[key]
    finally:
        in_process.release()


def _open_lock_file(path: Path) -> Any:
    """A lock file opened for flock (created with its folder); "a+" never truncates the holder's note."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a+")  # noqa: SIM115 - the caller closes it
    except OSError as e:
        raise ShvayambhuError(f"cannot create the store's lock file {path}: {e.strerror or e}") from e


@contextmanager
def _flock(path: Path, data_dir: Path | str, what: str, wait: bool) -> Iterator[None]:
    """The inter-process half of `write_lock`: an exclusive flock on the lock file, with the holder's note."""
    f = _open_lock_file(path)
    try:
        if not flock(f, wait=False):
            holder = _holder(f)
            if not wait:
                raise StoreBusy(
                    f"another writer ({holder}) is using the store in {data_dir}; "
                    "wait for it to finish, or run again without --no-wait to wait for it"
                ) from None
            print(f"waiting for another writer ({holder}) to finish...", file=sys.stderr, flush=True)
            flock(f)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "what": what}))
        f.flush()
        _bump(Path(data_dir), keep=True)  # a writer killed before it lets go still leaves a new generation
        ok = False
        try:
            yield
            ok = True
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            _bump(Path(data_dir), ok)
    finally:
        f.close()  # closing releases the flock
