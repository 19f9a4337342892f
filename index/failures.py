"""Store failures a user can act on: the error classes, and the one-line messages for a full disk, a damaged
or read-only store and a lost server. Its own module so that the store and its lock can both use it."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from index.chroma_compat import embedded_folder, server_address
from index.errors import ShvayambhuError


class StoreError(ShvayambhuError, RuntimeError):
    """The store cannot be reached or a collection does not match what the caller expects."""


class StoreDamaged(StoreError):
    """The store's files are damaged (an empty or corrupt chroma.sqlite3): restore a backup."""


class StoreReadOnly(StoreError):
    """The store's folder or database cannot be written (a read-only mount or mode); Chroma must write to open it."""


class DiskFull(StoreError):
    """The disk holding the store is full; nothing of the failed write was kept."""


SQLITE_NAME = "chroma.sqlite3"
LOW_SPACE = 16 << 20  # bytes free under which a failed write is put down to a full disk (Chroma may not say)


def writable(path: Path) -> bool:
    """Whether this process may write the store folder and its database (False on a read-only mount)."""
    db = path / SQLITE_NAME
    return os.access(path, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))


def read_only(path: Path, why: str) -> StoreReadOnly:
    """The one-line error for a store this process cannot write: nothing is wrong with its data."""
    return StoreReadOnly(
        f"the store in {path} is read-only ({why}); its data is intact: make the folder and its files writable "
        "for this user (or remount the disk read-write), or copy it to a writable folder and use --data-dir"
    )


def damaged(db: Path, cause: BaseException | str) -> StoreDamaged:
    """The one-line error for a damaged store file, saying how to get the data back."""
    why = cause if isinstance(cause, str) else f"{cause.__class__.__name__}: {str(cause).splitlines()[0][:200]}"
    return StoreDamaged(
        f"the store file {db} is damaged ({why}); restore a backup with `shvayambhu restore BACKUP_DIR --force`, "
        f"or move {db.parent} aside (keep it: it also holds memories) and ingest again"
    )


def translate_failure(e: BaseException, where: str) -> ShvayambhuError | None:
    """A one-line error for a store failure a user can act on (disk full, damaged file, server gone), or None.

    `where` names the store (its folder, or host:port) in the message."""
    text = str(e)
    full = (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "disk is full" in text or "No space left" in text
    if full or (os.path.isdir(where) and shutil.disk_usage(where).free < LOW_SPACE):
        return disk_full(where)
    if "malformed" in text or "not a database" in text or "file is encrypted" in text:
        return damaged(Path(where) / SQLITE_NAME, e)
    if "readonly database" in text and os.path.isdir(where) and not writable(Path(where)):
        return read_only(Path(where), "it cannot be written")
    if e.__class__.__module__.startswith(("chromadb", "sqlite3")) and os.path.isdir(where):
        problem = integrity_problem(Path(where) / SQLITE_NAME)
        if problem:
            return damaged(Path(where) / SQLITE_NAME, problem)
    if e.__class__.__module__.startswith(("httpx", "httpcore")) or isinstance(e, ConnectionError):
        return StoreError(
            f"lost the Chroma server at {where} ({e.__class__.__name__}); what was written so far is kept. "
            "Start the server again and run the same command again (it resumes where it stopped)"
        )
    return None


def disk_full(where: str, why: str = "nothing of the failed batch was written") -> DiskFull:
    """The one-line error for a store operation that failed on a full disk (the CLI's, and the server's 507)."""
    return DiskFull(
        f"the disk holding {where} is full; {why}. "
        "Free some space and run the same command again (it resumes where it stopped)"
    )


def integrity_problem(db: Path) -> str | None:
    """What sqlite's `quick_check` finds wrong with the store file, or None when it is sound (or unreadable now).

    Run only after Chroma failed in a way it does not explain: it reads the whole file, so a verdict is kept
    until the file changes."""
    try:
        st = db.stat()
    except OSError:
        return None
    key = (str(db), st.st_mtime_ns, st.st_size)
    if key not in _checked:
        _checked.clear()
        _checked[key] = _quick_check(db)
    return _checked[key]


_checked: dict[tuple[str, int, int], str | None] = {}


def _quick_check(db: Path) -> str | None:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = [r[0] for r in con.execute("PRAGMA quick_check(3)").fetchall()]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if "locked" in str(e) or "busy" in str(e) or "readonly" in str(e):
            return None
        return f"{e.__class__.__name__}: {str(e).splitlines()[0][:200]}"
    except OSError:
        return None
    found = "; ".join(" ".join(str(r).split()) for r in rows)  # a row may hold several lines
    return None if rows == ["ok"] else f"sqlite quick_check: {found[:160]}"


@contextmanager
def translating(client_or_collection: Any) -> Iterator[None]:
    """Re-raise a store failure a user can act on (see `translate_failure`) as its one-line error."""
    try:
        yield
    except ShvayambhuError:
        raise
    except Exception as e:
        err = translate_failure(e, store_name(client_or_collection))
        if err is None:
            raise
        raise err from e


def store_name(client_or_collection: Any) -> str:
    """The store a client or collection talks to, for messages: its folder or host:port."""
    folder = embedded_folder(client_or_collection)
    return str(folder) if folder is not None else server_address(client_or_collection)
