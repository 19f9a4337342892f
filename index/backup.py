"""Backup and restore of the embedded store: a consistent copy taken under the write lock, readers unaffected.

The database is copied with sqlite's online backup API (a reader may hold it open meanwhile), the vector
segment folders file by file; nothing writes while the lock is held. Restore builds the new store beside the
old one and swaps folders, so an interrupted restore leaves one of the two complete. It refuses while any other
process (a server, a running ask) has the store open: that process would go on with the files it had open and
lose what it writes (`index.lock.sole_user`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

from index.errors import ShvayambhuError, UsageError
from index.lock import sole_user, write_lock
from index.store import PREVIOUS, SQLITE_NAME, StoreDamaged, check_store

STORE = "chroma"
RESTORING = "chroma.restoring"
MANIFEST = "shvayambhu-backup.json"


class BackupError(ShvayambhuError, RuntimeError):
    """A backup or restore could not be done; the message says why and what to do."""


def _copy_store(src: Path, dest: Path) -> None:
    """Copy one store folder: the database through sqlite's backup API, segment folders as files."""
    dest.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, dest / item.name)
    db = src / SQLITE_NAME
    if db.exists():
        source = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
        target = sqlite3.connect(dest / SQLITE_NAME)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()


def _is_empty(store: Path) -> bool:
    return not store.exists() or not any(store.iterdir())


def backup(data_dir: Path | str, dest: Path | str) -> Path:
    """Copy the store under `data_dir` into the new or empty folder `dest`; returns `dest`."""
    data_dir, dest = Path(data_dir), Path(dest)
    store = data_dir / STORE
    if _is_empty(store):
        raise BackupError(f"there is no store in {data_dir} to back up: ingest something first")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"backup folder {dest} exists and is not empty: name a new folder")
    check_store(store)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with write_lock(data_dir, "backup"):
            _copy_store(store, partial / STORE)
        (partial / MANIFEST).write_text(json.dumps({"created": time.time(), "source": str(data_dir.resolve())}))
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise BackupError(f"backup to {dest} failed ({e.strerror or e}); the store itself is untouched") from e
    return dest


def restore(src: Path | str, data_dir: Path | str, force: bool = False) -> None:
    """Replace the store under `data_dir` with the backup in `src`; refuses a non-empty store unless `force`."""
    src, data_dir = Path(src), Path(data_dir)
    backup_store = src / STORE
    if not (backup_store / SQLITE_NAME).is_file():
        raise UsageError(f"{src} is not a backup (no {STORE}/{SQLITE_NAME} in it): name a folder `backup` made")
    try:
        check_store(backup_store)
    except StoreDamaged as e:
        raise BackupError(f"the backup in {src} is damaged itself: {e}") from e
    store = data_dir / STORE
    with sole_user(data_dir, "restore"), write_lock(data_dir, "restore"):
        if not _is_empty(store) and not force:
            raise UsageError(
                f"{data_dir} already holds a store: restore with --force to replace it (the current one is "
                "kept until the restored one is in place), or restore into another --data-dir"
            )
        restoring, previous = data_dir / RESTORING, data_dir / PREVIOUS
        shutil.rmtree(restoring, ignore_errors=True)
        try:
            _copy_store(backup_store, restoring)
        except OSError as e:
            shutil.rmtree(restoring, ignore_errors=True)
            raise BackupError(f"restore into {data_dir} failed ({e.strerror or e}); the store is untouched") from e
        if store.exists():
            shutil.rmtree(previous, ignore_errors=True)  # left by a restore stopped after its swap
            store.rename(previous)
        restoring.rename(store)
        shutil.rmtree(previous, ignore_errors=True)
