"""The Chroma store: an embedded persistent folder or a `chroma run` server, collections that know their model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import chromadb

from index.errors import ShvayambhuError

CORPUS = "corpus"


class StoreError(ShvayambhuError, RuntimeError):
    """The store cannot be reached or a collection does not match what the caller expects."""


def default_data_dir() -> Path:
    """`$SHVAYAMBHU_HOME`, else `~/.shvayambhu`."""
    return Path(os.environ.get("SHVAYAMBHU_HOME") or Path.home() / ".shvayambhu")


def open_client(data_dir: Path | str | None = None, host: str | None = None, port: int | None = None) -> Any:
    """A Chroma client: `HttpClient` when a host is given, else `PersistentClient` under `data_dir/chroma`."""
    from chromadb.config import Settings

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
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


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
    existing = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
    if name not in existing:
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
            configuration={"hnsw": {"space": "cosine", "ef_search": 100, "ef_construction": 100}},
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
    """Name, record count and recorded embedding model of every collection."""
    out = []
    for c in client.list_collections():
        col = client.get_collection(c.name if hasattr(c, "name") else c, embedding_function=None)
        meta = col.metadata or {}
        out.append(
            {
                "name": col.name,
                "count": col.count(),
                "embedding_model": meta.get("embedding_model"),
                "embedding_dim": meta.get("embedding_dim"),
                "embed_field": meta.get("embed_field"),
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
    vectors agree to cosine ~0.99 and dense nDCG@10 moves by < 0.005 (NOTES-hybrid.md)."""
    built = collection_precision(collection)
    if built != precision:
        raise PrecisionMismatch(
            f"collection {collection.name!r} holds {built} embeddings; this run embeds at {precision}. Use "
            f"--embedding-precision {built} (SHVAYAMBHU_EMBEDDING_PRECISION={built}), or ingest into another "
            "collection (--collection NAME)."
        )
