"""The Chroma store: an embedded persistent folder or a `chroma run` server, collections that know their model."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import chromadb

from index.chroma_compat import COSINE_CONFIGURATION, collection_names, persistent_client, stop_embedded
from index.errors import ShvayambhuError
from index.failures import (  # noqa: F401 - the store's errors are imported from here too
    LOW_SPACE,
    SQLITE_NAME,
    DiskFull,
    StoreDamaged,
    StoreError,
    StoreReadOnly,
    damaged,
    disk_full,
    integrity_problem,
    read_only,
    store_name,
    translate_failure,
    translating,
    writable,
)
from index.lock import StoreBusy, hold_open, release_open, write_lock

CORPUS = "corpus"


PREVIOUS = "chroma.previous"  # the store a restore is replacing, kept until the new one is in place


def default_data_dir() -> Path:
    """`$SHVAYAMBHU_HOME`, else `~/.shvayambhu`."""
    return Path(os.environ.get("SHVAYAMBHU_HOME") or Path.home() / ".shvayambhu")


def open_client(data_dir: Path | str | None = None, host: str | None = None, port: int | None = None) -> Any:
    """A Chroma client: `HttpClient` when a host is given, else `PersistentClient` under `data_dir/chroma`."""
    from chromadb.config import Settings  # lazy: loads chromadb

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    if host:
        try:
            client = chromadb.HttpClient(host=host, port=port or 8000, settings=settings)
            client.heartbeat()
        except Exception as e:
            raise StoreError(
                f"cannot reach the Chroma server at {host}:{port or 8000} ({e.__class__.__name__}). "
                f"Start one with `chroma run --path DIR --host {host} --port {port or 8000}`, "
                "or drop --chroma-host to use the embedded store."
            ) from e
        return client
    path = Path(data_dir or default_data_dir()) / "chroma"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError) as e:
        raise StoreError(
            f"data directory {path.parent} lies under a file ({e.filename}), not a folder: "
            "choose another --data-dir (or SHVAYAMBHU_HOME)"
        ) from e
    except OSError as e:
        raise StoreError(f"cannot create the store folder {path}: {e.strerror or e}; choose another --data-dir") from e
    hold_open(path.parent)  # restore refuses while any process has the store open
    _opened.add(str(path))
    check_store(path)
    if not writable(path):
        raise read_only(path, "Chroma must write to its files to open them")
    try:
        return persistent_client(str(path), settings)
    except Exception as e:  # chromadb raises its own InternalError, or sqlite3's, for a damaged file
        if "readonly" in str(e) or "read-only" in str(e):
            raise read_only(path, "Chroma must write to its files to open them") from e
        if isinstance(translate_failure(e, str(path)), DiskFull):
            raise disk_full(str(path), "Chroma writes to the store even to open it") from e
        raise damaged(path / SQLITE_NAME, e) from e


def opened_stores() -> set[str]:
    """The embedded store folders (their `chroma` folder) this process opened."""
    return set(_opened)


def reopen_after_failure(data_dir: Path | str) -> None:
    """Drop Chroma's embedded system of the store in `data_dir`, so the next client opens it afresh. After a write
    failed on a full disk, Chroma's running system can hang the next write for ever (seen with chromadb 1.5.9: an
    upsert that never returns once space is back); the data on disk is intact and a fresh system reads it."""
    path = str(Path(data_dir) / "chroma")
    if path in _opened:
        stop_embedded(path)


def close_stores(keep: set[str] | frozenset[str] = frozenset()) -> None:
    """Stop the embedded stores this process opened, except the folders in `keep`: their database connections,
    index files and threads are let go, and the process no longer holds them open. A client or collection of a
    closed store must not be used again. For processes that open many stores in turn (a test run)."""
    for path in sorted(_opened - set(keep)):
        _opened.discard(path)
        stop_embedded(path)
        release_open(Path(path).parent)


def check_store(path: Path) -> None:
    """Refuse a store folder whose database is empty or unreadable (Chroma would silently start afresh).

    Reads only the sqlite header and schema: milliseconds, whatever the size of the store."""
    db = path / SQLITE_NAME
    segments = [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    if not db.exists():
        if (path.parent / PREVIOUS).is_dir():
            raise StoreDamaged(
                f"a restore into {path.parent} was interrupted; the old store is in {path.parent / PREVIOUS}: "
                f"run `shvayambhu restore BACKUP_DIR --force` again, or move {PREVIOUS} back to {path.name}"
            )
        if segments:
            raise damaged(db, f"missing, while {len(segments)} vector segment folder(s) remain")
        return
    size = db.stat().st_size
    if size == 0:
        raise damaged(db, "an empty file (0 bytes)")
    try:
        with db.open("rb") as f:
            header = f.read(100)
        if header[:16] != b"SQLite format 3\x00":
            raise damaged(db, "not an SQLite database")
        journal = db.with_name(db.name + "-journal")
        if not (journal.exists() and journal.stat().st_size > 0):  # mid-commit the header runs ahead of the file
            _check_length(db, header, size)
        try:
            _read_schema(db)
        except sqlite3.OperationalError as e:
            if "readonly" not in str(e):  # SQLITE_READONLY_ROLLBACK: a hot journal only a writer can roll back
                raise
            if _recover(path, db):
                with db.open("rb") as f:
                    _check_length(db, f.read(100), db.stat().st_size)
                _read_schema(db)
    except sqlite3.DatabaseError as e:
        if "locked" in str(e) or "busy" in str(e):
            return  # a writer holds it: not damage
        raise damaged(db, e) from e
    except OSError as e:
        raise StoreError(f"cannot read the store file {db} ({e.strerror or e}); check its permissions") from e


def _check_length(db: Path, header: bytes, size: int) -> None:
    """Refuse a database file shorter than its header says it is (a copy or disk that lost its tail)."""
    expected = _header_size(header)
    if expected and size < expected:
        raise damaged(db, f"truncated: {size} bytes of {expected}")


def _read_schema(db: Path) -> None:
    """Read the schema and the collections table through a read-only connection (raises sqlite3's errors)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        con.execute("SELECT count(*) FROM collections").fetchone()
    finally:
        con.close()


def _recover(path: Path, db: Path) -> bool:
    """Roll back the unfinished transaction that a killed writer left in a hot journal, under the write lock.

    sqlite rolls a hot journal back on the first read through a read-write connection. Returns False when a
    live writer of ours holds the lock (its own connection rolls it back first)."""
    journal = db.with_name(db.name + "-journal")
    if not writable(path):
        raise read_only(path, f"an interrupted write left {journal.name} to roll back, which needs write access")
    try:
        with write_lock(path.parent, "recover", wait=False):
            con = sqlite3.connect(str(db), timeout=30)
            try:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                con.close()
    except StoreBusy:
        return False
    print(
        f"recovered the store in {path}: rolled back a write that was interrupted (its last unfinished batch); "
        "run that command again to finish it",
        file=sys.stderr,
        flush=True,
    )
    return True


def _header_size(header: bytes) -> int:
    """The database size the sqlite header records (pages x page size), or 0 when the header does not say."""
    if len(header) < 100 or header[24:28] != header[92:96]:
        return 0  # the page count is only valid when written by the same change as the header
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    return int.from_bytes(header[28:32], "big") * page


_opened: set[str] = set()  # the embedded store folders this process opened, for `explain`


def explain(e: BaseException) -> ShvayambhuError | None:
    """`translate_failure` for an error raised outside `translating`, against each store this process opened."""
    if isinstance(e, ShvayambhuError):
        return e
    if not e.__class__.__module__.startswith(("chromadb", "sqlite3")):  # an OSError: each front end's own words
        return None
    for where in sorted(_opened):
        err = translate_failure(e, where)
        if err is not None:
            return err
    return None


def check_name(name: str) -> str:
    """Chroma accepts 3-512 characters of [a-zA-Z0-9._-]; say so before Chroma does, less cryptically."""
    ok = 3 <= len(name) <= 512 and all(c.isalnum() or c in "._-" for c in name) and name.isascii()
    if not ok or not (name[0].isalnum() and name[-1].isalnum()):
        raise StoreError(
            f"collection name {name!r} is invalid: use 3-512 characters of letters, digits, '.', '_', '-', "
            "starting and ending with a letter or digit"
        )
    return name


def get_collection(
    client: Any,
    name: str,
    *,
    model: str,
    dim: int | None,
    embed_field: str | None = None,
    create: bool = True,
    extra: dict[str, Any] | None = None,
    precision: str | None = None,
) -> Any:
    """Open (or create) a cosine collection and refuse one built with another embedding model or field."""
    check_name(name)
    if name not in collection_names(client):
        if not create or dim is None:
            raise StoreError(f"collection {name!r} does not exist yet: run `shvayambhu ingest PATH` first")
        meta: dict[str, Any] = {"embedding_model": model, "embedding_dim": dim, **(extra or {})}
        if embed_field:
            meta["embed_field"] = embed_field
        if precision:
            meta["embedding_precision"] = precision
        return client.get_or_create_collection(
            name,
            embedding_function=None,
            metadata=meta,
            configuration=COSINE_CONFIGURATION,
        )
    col = client.get_collection(name, embedding_function=None)
    meta = col.metadata or {}
    if meta.get("embedding_model") != model or (dim is not None and int(meta.get("embedding_dim", -1)) != dim):
        raise StoreError(
            f"collection {name!r} was built with embedding model {meta.get('embedding_model')!r} "
            f"(dim {meta.get('embedding_dim')}), not {model!r}. Use --embedding-model "
            f"{meta.get('embedding_model')}, or ingest into another collection (--collection NAME)."
        )
    if embed_field and meta.get("embed_field", embed_field) != embed_field:
        raise StoreError(
            f"collection {name!r} embeds the {meta.get('embed_field')!r} of each pair, not {embed_field!r}. "
            f"Use --embed {meta.get('embed_field')}, or ingest into another collection (--collection NAME)."
        )
    return col


def collection_info(client: Any) -> list[dict[str, Any]]:
    """Name, record count and recorded embedding model (and precision, where recorded) of every collection."""
    out = []
    with translating(client):
        cols = [client.get_collection(name, embedding_function=None) for name in collection_names(client)]
    for col in cols:
        meta = col.metadata or {}
        with translating(client):
            count = col.count()
        out.append(
            {
                "name": col.name,
                "count": count,
                "embedding_model": meta.get("embedding_model"),
                "embedding_dim": meta.get("embedding_dim"),
                "embed_field": meta.get("embed_field"),
                "embedding_precision": meta.get("embedding_precision"),
            }
        )
    return sorted(out, key=lambda d: d["name"])


class PrecisionMismatch(StoreError):
    """Vectors of one embedding precision would be written into a collection built at another."""


def collection_precision(collection: Any) -> str:
    """The precision a collection's vectors were embedded at (collections from before int8 existed: fp32)."""
    return str((collection.metadata or {}).get("embedding_precision", "fp32"))


def check_write_precision(collection: Any, precision: str) -> None:
    """Refuse to mix precisions in one collection. Querying at the other precision is allowed: int8 and fp32
    vectors agree to cosine ~0.99 and dense nDCG@10 moves by < 0.005 (bench/RESULTS.md, int8)."""
    built = collection_precision(collection)
    if built != precision:
        raise PrecisionMismatch(
            f"collection {collection.name!r} holds {built} embeddings; this run embeds at {precision}. Use "
            f"--embedding-precision auto or {built} (SHVAYAMBHU_EMBEDDING_PRECISION), or ingest into another "
            "collection (--collection NAME)."
        )
