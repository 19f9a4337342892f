"""Every use of Chroma's internals (private attributes, version-specific shapes and messages) in one place.

The rest of the project uses Chroma's public client API and these functions. Each of them is exercised against a
real embedded Chroma by tests/test_chroma_compat.py, whose failures name the internal and TESTED_VERSION: after a
chromadb upgrade, that file says what to change here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

TESTED_VERSION = "1.5.9"  # the chromadb release the contract test last passed on

# How Chroma 1.x is told to build a cosine HNSW index (0.x took metadata {"hnsw:space": "cosine"} instead).
COSINE_CONFIGURATION: dict[str, Any] = {"hnsw": {"space": "cosine", "ef_search": 100, "ef_construction": 100}}

# The message of Chroma's InternalError when a filtered query meets a vector index that writers in another
# process have moved past this process's loaded copy (chromadb/api/rust.py, Rust segment reader).
STALE_VIEW_TEXT = "Error finding id"


def installed_version() -> str:
    """The chromadb release installed in this environment."""
    import chromadb

    return str(chromadb.__version__)


def collection_names(client: Any) -> list[str]:
    """Names of a client's collections (Chroma 0.6+ lists Collection objects, 0.5 listed names)."""
    return [c.name if hasattr(c, "name") else str(c) for c in client.list_collections()]


def server_api(client_or_collection: Any) -> Any:
    """The server API object behind a client (its private `_server`) or a collection (its private `_client`):
    one per store and process, whichever handle a caller holds."""
    for attr in ("_client", "_server"):
        inner = getattr(client_or_collection, attr, None)
        if inner is not None:
            return inner
    return client_or_collection


def settings_of(client_or_collection: Any) -> Any | None:
    """Chroma's Settings of the store a client or collection talks to (`get_settings` on its server API), or None
    for an object that is not a Chroma handle."""
    try:
        return server_api(client_or_collection).get_settings()
    except AttributeError:
        return None


def embedded_folder(client_or_collection: Any) -> Path | None:
    """The folder an embedded (PersistentClient) store keeps its files in; None for a server or in-memory store."""
    s = settings_of(client_or_collection)
    if s is None or not getattr(s, "is_persistent", False) or "fastapi" in str(s.chroma_api_impl).lower():
        return None
    return Path(s.persist_directory)


def server_address(client_or_collection: Any) -> str:
    """'host:port' of the Chroma server a client or collection talks to, for messages."""
    s = settings_of(client_or_collection)
    if s is None:
        return "the store"
    return f"{s.chroma_server_host}:{s.chroma_server_http_port}"


def reload_view(client_or_collection: Any) -> None:
    """Drop this process's cached vector indexes of an embedded store, so the next access reads what other
    processes wrote: `start()` on the Rust bindings API builds new `bindings` and swaps them in (a call still
    running finishes on the old ones). Collections opened before stay usable. Nothing for other stores."""
    api = server_api(client_or_collection)
    if embedded_folder(api) is None or not hasattr(api, "bindings"):
        return
    api.start()


def is_stale_view(error: BaseException) -> bool:
    """Whether a failed query failed because another process wrote to the vector index since this process loaded
    it (retry once after `reload_view`)."""
    return STALE_VIEW_TEXT in str(error)


# Chroma keeps one running system per folder in `SharedSystemClient`'s class-level maps, filled without a lock: two
# threads opening a folder at once can each see the other's half-started system and fail (KeyError, "could not
# connect to tenant"), which reads as a damaged store. Every open and stop in this process goes through this lock.
_systems_lock = threading.RLock()


def persistent_client(folder: str, settings: Any) -> Any:
    """`chromadb.PersistentClient` for `folder`, opened by one thread at a time (see `_systems_lock`)."""
    import chromadb

    with _systems_lock:
        return chromadb.PersistentClient(path=folder, settings=settings)


def stop_embedded(folder: str) -> bool:
    """Stop Chroma's cached system of the embedded store in `folder` (its database connections, index files and
    threads), dropping it from Chroma's per-folder system cache (`SharedSystemClient`'s private maps), so that a
    later `PersistentClient` opens it afresh. True when one was running."""
    from chromadb.api.shared_system_client import SharedSystemClient

    stopped = False
    with _systems_lock:
        for ident, system in list(SharedSystemClient._identifier_to_system.items()):
            if getattr(system.settings, "persist_directory", None) == folder:
                SharedSystemClient._identifier_to_system.pop(ident, None)
                SharedSystemClient._identifier_to_refcount.pop(ident, None)
                system.stop()
                stopped = True
    return stopped


def max_batch_size(client_or_collection: Any, default: int = 1000) -> int:
    """The most records one add/upsert may carry (a Collection has no public accessor: ask its server API), or
    `default` when the store cannot say (a lost server fails the write that follows, in its own words)."""
    try:
        return int(server_api(client_or_collection).get_max_batch_size())
    except Exception:
        return default


def ephemeral_client() -> Any:
    """An in-memory Chroma client. Chroma keeps one in-memory system per process and refuses (ValueError) a second
    one with other settings: then the existing one is reused."""
    import chromadb
    from chromadb.config import Settings

    try:
        return chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False, allow_reset=False))
    except ValueError:
        return chromadb.EphemeralClient()
