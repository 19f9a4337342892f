"""Find records whose vector cannot be read (lost by concurrent writers before the lock), and re-embed them.

A record's document is the text that was embedded, so the repair needs nothing but the store and the model.
"""

from __future__ import annotations

from typing import Any

from index.embed import Embedder
from index.lock import refresh

BATCH = 200  # ids read per request; a batch with a bad vector is re-read one id at a time


def _readable(collection: Any, ids: list[str]) -> set[str]:
    """The ids among `ids` whose vector Chroma returns."""
    try:
        got = collection.get(ids=ids, include=["embeddings"])
        embs = got["embeddings"]
        if embs is not None and len(embs) == len(ids):
            return set(got["ids"])
    except Exception:  # chromadb raises InternalError "Error getting embedding" for a lost vector
        if len(ids) == 1:
            return set()
    if len(ids) == 1:
        return set()
    return {i for id_ in ids for i in _readable(collection, [id_])}


def check(collection: Any, ids: list[str] | None = None) -> list[str]:
    """Ids of the records in `collection` (or of `ids` among them) that have no readable vector: a search
    never finds them."""
    refresh(collection)  # a doctor reads what is on disk now, not what this process cached
    ids = collection.get(include=[])["ids"] if ids is None else collection.get(ids=ids, include=[])["ids"]
    bad: list[str] = []
    for i in range(0, len(ids), BATCH):
        part = ids[i : i + BATCH]
        ok = _readable(collection, part)
        bad.extend(x for x in part if x not in ok)
    return bad


def repair(collection: Any, embedder: Embedder, ids: list[str] | None = None) -> int:
    """Re-embed the records without a readable vector from their stored documents; the number repaired.

    Take the store's write lock around it (`index.lock.store_write_lock`)."""
    bad = check(collection) if ids is None else ids
    for i in range(0, len(bad), BATCH):
        got = collection.get(ids=bad[i : i + BATCH], include=["documents", "metadatas"])
        docs = [d or "" for d in got["documents"]]
        vecs = embedder.embed(docs)
        collection.upsert(ids=got["ids"], embeddings=vecs.tolist(), documents=docs, metadatas=got["metadatas"])
    return len(bad)
