"""Finding records: top-k by cosine similarity, minimum score, metadata filters and MMR."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index.embed import Embedder
from index.errors import UsageError
from index.lock import query_fresh


@dataclass
class Hit:
    """One retrieved record; `score` is the cosine similarity to the query (1 is identical)."""

    id: str
    score: float
    prompt: str
    response: str
    metadata: dict[str, Any] = field(default_factory=dict)
    document: str = ""
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "prompt": self.prompt,
            "response": self.response,
            "metadata": self.metadata,
        }


def where_clause(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chroma wants `$and` around more than one condition; a single `key: value` stays as it is."""
    if not filters:
        return None
    conds = [{k: v} for k, v in filters.items()]
    return conds[0] if len(conds) == 1 else {"$and": conds}


def query_vector(
    collection: Any,
    vector: np.ndarray,
    *,
    k: int = 5,
    where: dict[str, Any] | None = None,
    min_score: float | None = None,
    mmr: bool = False,
    fetch_k: int = 20,
    mmr_lambda: float = 0.5,
) -> list[Hit]:
    """Search with a ready query vector (normalised); the same options as `search`."""
    total = collection.count()
    if total == 0 or k <= 0:
        return []
    n = min(max(fetch_k, k) if mmr else k, total)
    res = query_fresh(
        collection,
        query_embeddings=[np.asarray(vector, dtype=np.float32).tolist()],
        n_results=n,
        where=where_clause(where),
        include=["distances", "metadatas", "documents"] + (["embeddings"] if mmr else []),
    )
    hits = []
    for i, id_ in enumerate(res["ids"][0]):
        meta = dict(res["metadatas"][0][i] or {})
        doc = res["documents"][0][i] or ""
        emb = np.asarray(res["embeddings"][0][i], dtype=np.float32) if mmr else None
        hits.append(
            Hit(
                id=id_,
                score=1.0 - float(res["distances"][0][i]),
                prompt=str(meta.get("prompt", doc)),
                response=str(meta.get("response", "")),
                metadata=meta,
                document=doc,
                embedding=emb,
            )
        )
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    if mmr:
        hits = mmr_select(np.asarray(vector, dtype=np.float32), hits, k, mmr_lambda)
    return hits[:k]


def search(
    collection: Any,
    embedder: Embedder,
    query: str,
    *,
    k: int = 5,
    where: dict[str, Any] | None = None,
    min_score: float | None = None,
    mmr: bool = False,
    fetch_k: int = 20,
    mmr_lambda: float = 0.5,
) -> list[Hit]:
    """Embed `query` and return up to k hits, best first (or in MMR selection order)."""
    if not query.strip():
        raise UsageError("the query is empty: give the text to search for")
    return query_vector(
        collection,
        embedder.embed_query(query),
        k=k,
        where=where,
        min_score=min_score,
        mmr=mmr,
        fetch_k=fetch_k,
        mmr_lambda=mmr_lambda,
    )


def mmr_select(query: np.ndarray, hits: list[Hit], k: int, lam: float) -> list[Hit]:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998): relevant to the query, unlike what is chosen."""
    if not hits:
        return []
    embs = np.stack([h.embedding for h in hits])
    rel = embs @ query
    chosen: list[int] = []
    left = list(range(len(hits)))
    while left and len(chosen) < k:
        if chosen:
            red = (embs[left] @ embs[chosen].T).max(axis=1)
        else:
            red = np.zeros(len(left))
        best = left[int(np.argmax(lam * rel[left] - (1 - lam) * red))]
        chosen.append(best)
        left.remove(best)
    return [hits[i] for i in chosen]
