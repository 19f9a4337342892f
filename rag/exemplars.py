"""The exemplars the layer retrieves for a question: top-k in the configured mode, never from the held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np

from index.fusion import FusionOptions, minmax
from index.retrieve import Hit, mmr_select, query_vector
from ingest.records import split_name
from rag.config import RetrievalSettings

HELDOUT_MARGIN = 8  # extra hits fetched so that dropping held-out ones still leaves enough


def exemplars(
    collection: Any,
    vector: np.ndarray,
    r: RetrievalSettings,
    k: int,
    *,
    text: str | None = None,
    lexical: Any | None = None,
    fusion: FusionOptions | None = None,
) -> list[Hit]:
    """The top-k exemplars for a question (its `vector`, and its `text` for the lexical side of [retrieval] mode),
    MMR-diversified when [retrieval] mmr is on, never from the held-out split.

    A Chroma `$ne` filter scans the whole collection (20-60 ms at 10,000 records, a plain top-4 takes ~1.3 ms), so
    held-out records are dropped from a slightly wider unfiltered top-n instead; only when too few survive is
    the filtered query run. Both give the same hits."""
    fetch = r.fetch_k if r.mmr else k
    lam = r.mmr_lambda if r.mmr else 1.0
    how = {"min_score": r.min_score, "mmr": True, "mode": r.mode, "text": text, "lexical": lexical, "fusion": fusion}
    if not r.exclude_split:
        return query_vector(collection, vector, k=k, fetch_k=fetch, mmr_lambda=lam, **how)
    excluded = split_name(r.exclude_split)
    n = fetch + HELDOUT_MARGIN
    wide = query_vector(collection, vector, k=n, fetch_k=n, mmr_lambda=1.0, **how)
    kept = [h for h in wide if split_name(h.metadata.get("split")) != excluded]
    if len(kept) < fetch and len(wide) == n:  # the held-out split crowds the top: let Chroma filter
        where = {"split": {"$ne": excluded}}
        return query_vector(collection, vector, k=k, where=where, fetch_k=fetch, mmr_lambda=lam, **how)
    if not r.mmr:
        return kept[:k]
    pool = kept[:fetch]
    fused = minmax({h.id: float(h.fused_score or 0.0) for h in pool}) if r.mode != "dense" else None
    relevance = np.array([fused[h.id] for h in pool]) if fused else None
    return mmr_select(np.asarray(vector, dtype=np.float32), pool, k, lam, relevance)
