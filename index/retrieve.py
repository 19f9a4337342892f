"""Finding records: dense (cosine), lexical (BM25) or hybrid (fused) top-k, minimum score, metadata filters, MMR."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index.embed import Embedder
from index.errors import UsageError
from index.fusion import FusionOptions, fuse, minmax
from index.lexical import STALE_NOTE, LexicalIndex, LexicalStore
from index.lock import fresh_count, query_fresh

MODES = ("dense", "hybrid", "lexical")
DEFAULT_MODE = "dense"
HYBRID_DEPTH = 50  # candidates taken from each retriever before fusion
FILTER_OVERFETCH = 4  # lexical candidates fetched per wanted hit when a filter may drop some


@dataclass
class Hit:
    """One retrieved record; `score` is the cosine similarity to the query (1 is identical) in every mode.

    `dense_rank` / `lexical_rank` (from 1) say which retriever found it and where; `fused_score` is what the
    final order was made by (cosine for dense, BM25 for lexical, the fusion score for hybrid).
    """

    id: str
    score: float
    prompt: str
    response: str
    metadata: dict[str, Any] = field(default_factory=dict)
    document: str = ""
    embedding: np.ndarray | None = field(default=None, repr=False)
    dense_rank: int | None = None
    lexical_rank: int | None = None
    fused_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "prompt": self.prompt,
            "response": self.response,
            "metadata": self.metadata,
            "dense_rank": self.dense_rank,
            "lexical_rank": self.lexical_rank,
            "fused_score": None if self.fused_score is None else round(self.fused_score, 6),
        }


class Hits(list[Hit]):
    """Hits, best first, with `notes` on how they were found (e.g. that the keyword side was being rebuilt)."""

    def __init__(self, hits: Iterable[Hit] = (), notes: list[str] | None = None):
        super().__init__(hits)
        self.notes = list(notes or [])


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
    mode: str = DEFAULT_MODE,
    text: str | None = None,
    lexical: LexicalStore | LexicalIndex | None = None,
    fusion: FusionOptions | None = None,
) -> list[Hit]:
    """Search with a ready query vector (normalised); the same options as `search`. Lexical and hybrid modes
    also need the query `text` and the collection's `lexical` index; while a `LexicalStore` is stale (being
    rebuilt in the background) they return dense hits, with a note saying so."""
    if mode not in MODES:
        raise UsageError(f"retrieval mode must be one of {', '.join(MODES)}, not {mode!r}")
    if k <= 0:
        return Hits()
    if mode == "dense":  # Chroma returns fewer hits when it holds fewer: no count needed (it costs a round trip)
        return Hits(_dense(collection, vector, k, where, min_score, mmr, fetch_k, mmr_lambda))
    total = fresh_count(collection)
    if total == 0:
        return Hits()
    if text is None or lexical is None:
        raise UsageError(f"{mode} retrieval needs the query text and the collection's lexical index")
    index = lexical.current(collection, count=total) if isinstance(lexical, LexicalStore) else lexical
    if index is None:  # the keyword index is stale and being rebuilt: the dense side alone meanwhile
        hits = _dense(collection, vector, k, where, min_score, mmr, fetch_k, mmr_lambda)
        return Hits(hits, notes=[STALE_NOTE])
    want = min(max(fetch_k, k) if mmr else k, total)
    q = np.asarray(vector, dtype=np.float32)
    depth = min(max(HYBRID_DEPTH, want), total)
    lex = _lexical_filtered(collection, index, text, depth, where)
    lex_rank = {i: r for r, (i, _) in enumerate(lex, start=1)}
    if mode == "lexical":
        fused, dense_rank = lex, {}
    else:
        dense = _dense_ids(collection, q, depth, where)
        dense_rank = {i: r for r, (i, _) in enumerate(dense, start=1)}
        fused = fuse(dense, lex, fusion or FusionOptions())
    hits = _hydrate(collection, q, fused[:want])
    for h in hits:
        h.dense_rank, h.lexical_rank = dense_rank.get(h.id), lex_rank.get(h.id)
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    if mmr:
        norm = minmax({h.id: float(h.fused_score or 0.0) for h in hits})
        hits = mmr_select(q, hits, k, mmr_lambda, np.array([norm[h.id] for h in hits]))
    return Hits(hits[:k])


def _dense(
    collection: Any,
    vector: np.ndarray,
    k: int,
    where: dict[str, Any] | None,
    min_score: float | None,
    mmr: bool,
    fetch_k: int,
    mmr_lambda: float,
) -> list[Hit]:
    n = max(fetch_k, k) if mmr else k
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
        score = 1.0 - float(res["distances"][0][i])
        hits.append(_hit(id_, score, meta, doc, emb, dense_rank=i + 1, fused_score=score))
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    if mmr:
        hits = mmr_select(np.asarray(vector, dtype=np.float32), hits, k, mmr_lambda)
    return hits[:k]


def _hit(id_: str, score: float, meta: dict[str, Any], doc: str, emb: np.ndarray | None, **ranks: Any) -> Hit:
    return Hit(
        id=id_,
        score=score,
        prompt=str(meta.get("prompt", doc)),
        response=str(meta.get("response", "")),
        metadata=meta,
        document=doc,
        embedding=emb,
        **ranks,
    )


def _dense_ids(collection: Any, q: np.ndarray, n: int, where: dict[str, Any] | None) -> list[tuple[str, float]]:
    """Top-n (id, cosine) from Chroma, without fetching documents."""
    res = query_fresh(
        collection, query_embeddings=[q.tolist()], n_results=n, where=where_clause(where), include=["distances"]
    )
    return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0], strict=True)]


def _lexical_filtered(
    collection: Any, index: LexicalIndex, text: str, n: int, where: dict[str, Any] | None
) -> list[tuple[str, float]]:
    """Top-n BM25 hits that pass `where`: over-fetch and check the candidates, and only when the filter drops
    too many, restrict BM25 to every id the filter allows (one more Chroma request)."""
    if not where:
        return index.search(text, n)
    cands = index.search(text, n * FILTER_OVERFETCH)
    kept = (
        set(collection.get(ids=[i for i, _ in cands], where=where_clause(where), include=[])["ids"]) if cands else set()
    )
    found = [(i, s) for i, s in cands if i in kept]
    if len(found) >= n or len(cands) < n * FILTER_OVERFETCH:
        return found[:n]
    allowed = set(collection.get(where=where_clause(where), include=[])["ids"])
    return index.search(text, n, allowed=allowed)


def _hydrate(collection: Any, q: np.ndarray, ranked: list[tuple[str, float]]) -> list[Hit]:
    """Hits for ranked (id, fused score) pairs, in that order, with documents, metadata, embeddings and cosine."""
    if not ranked:
        return []
    got = collection.get(ids=[i for i, _ in ranked], include=["metadatas", "documents", "embeddings"])
    rows = {i: n for n, i in enumerate(got["ids"])}
    hits = []
    for id_, fused in ranked:
        if id_ not in rows:  # deleted since the lexical index was built
            continue
        n = rows[id_]
        emb = np.asarray(got["embeddings"][n], dtype=np.float32)
        meta = dict(got["metadatas"][n] or {})
        hits.append(_hit(id_, float(emb @ q), meta, got["documents"][n] or "", emb, fused_score=float(fused)))
    return hits


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
    mode: str = DEFAULT_MODE,
    lexical: LexicalStore | LexicalIndex | None = None,
    fusion: FusionOptions | None = None,
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
        mode=mode,
        text=query,
        lexical=lexical,
        fusion=fusion,
    )


def mmr_select(
    query: np.ndarray, hits: list[Hit], k: int, lam: float, relevance: np.ndarray | None = None
) -> list[Hit]:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998): relevant to the query, unlike what is chosen.
    Relevance is the cosine to the query unless given (fused lists pass their normalised fused scores)."""
    if not hits:
        return []
    embs = np.stack([h.embedding for h in hits])
    rel = embs @ query if relevance is None else np.asarray(relevance, dtype=np.float32)
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
