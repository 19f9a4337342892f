"""Retrieval-conditioned training data for the BLT.

Records come from the ingested Chroma collection or from files (through the ingest readers). Each record
gets its k nearest neighbours as exemplars, with the record itself and its near-duplicates (cosine > 0.95,
or the same normalised prompt or response) left out. Records whose split is "heldout" are the evaluation
set: they are never trained on and never serve as exemplars. Exemplars of training records come from the
training records only; validation and heldout records draw on training + validation records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blt.data import Sample, split_validation
from index.embed import load_embedder
from index.errors import ShvayambhuError, UsageError
from ingest.readers import read_path
from ingest.records import HELDOUT_FRACTION, Record, heldout_flags, split_name
from ingest.validate import check_record


class TrainingError(ShvayambhuError, ValueError):
    """The corpus or a checkpoint cannot be used for training or scoring; the message says what to do."""


@dataclass
class CorpusRecord:
    """What training needs of a corpus record."""

    id: str
    prompt: str
    response: str
    category: str | None = None
    split: str | None = None
    kind: str = "pair"  # "pair" (a prompt and its answer) or "text" (a titled passage)


@dataclass
class RetrievalData:
    """Samples with their exemplars: train, validation (early stopping) and heldout (evaluation)."""

    train: list[Sample]
    val: list[Sample]
    heldout: list[Sample]
    info: dict[str, Any] = field(default_factory=dict)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def records_from_files(paths: Iterable[str | Path], validate: bool = True) -> list[CorpusRecord]:
    """Records of JSONL/JSON/text files or folders; invalid ones (ingest.validate) are skipped."""
    check = check_record if validate else None
    out: dict[str, CorpusRecord] = {}
    for p in paths:
        for rec in read_path(p):
            if not isinstance(rec, Record) or (check is not None and check(rec) is not None):
                continue
            out.setdefault(
                rec.id, CorpusRecord(rec.id, rec.prompt, rec.response, rec.category, split_name(rec.split), rec.kind)
            )
    return list(out.values())


def records_from_chroma(collection: Any, page: int = 1000) -> tuple[list[CorpusRecord], np.ndarray | None]:
    """All records of a Chroma corpus collection and their stored embeddings (normalised)."""
    recs: list[CorpusRecord] = []
    embs: list[np.ndarray] = []
    total = collection.count()
    for offset in range(0, total, page):
        got = collection.get(limit=page, offset=offset, include=["metadatas", "documents", "embeddings"])
        for i, id_ in enumerate(got["ids"]):
            meta = got["metadatas"][i] or {}
            doc = (got.get("documents") or [None] * len(got["ids"]))[i] or ""
            recs.append(
                CorpusRecord(
                    id_,
                    str(meta.get("prompt", doc)),
                    str(meta.get("response", "")),
                    meta.get("category"),
                    split_name(meta.get("split")),
                )
            )
            if got.get("embeddings") is not None:
                embs.append(np.asarray(got["embeddings"][i], dtype=np.float32))
    if not recs or len(embs) != len(recs):
        return recs, None
    e = np.stack(embs)
    return recs, e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(
    queries: np.ndarray,
    docs: np.ndarray,
    pool: np.ndarray,
    k: int,
    dup_threshold: float = 0.95,
    same: np.ndarray | None = None,
) -> list[list[int]]:
    """For each query row i: up to k indices j of `docs` in `pool`, best first, with j != i, not a
    near-duplicate of i (cos(docs[i], docs[j]) > dup_threshold) and not marked `same[i, j]`."""
    sims = queries @ docs.T
    dup = docs @ docs.T > dup_threshold
    blocked = dup | ~pool[None, :]
    if same is not None:
        blocked |= same
    np.fill_diagonal(blocked, True)
    sims = np.where(blocked, -np.inf, sims)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[int(j) for j in row if np.isfinite(sims[i, j])] for i, row in enumerate(order)]


def build_samples(
    records: Sequence[CorpusRecord],
    *,
    embedder: Any = None,
    doc_embeddings: np.ndarray | None = None,
    k: int = 4,
    val_fraction: float = 0.05,
    heldout_fraction: float = HELDOUT_FRACTION,
    dup_threshold: float = 0.95,
    seed: int = 0,
    embed_field: str = "prompt",
) -> RetrievalData:
    """Split records into train/val/heldout and attach each one's k nearest (allowed) neighbours.

    Heldout = records with split "heldout"; when none is marked and heldout_fraction > 0, that fraction is
    chosen by a stable hash of the record id instead (reported in `info`).
    """
    recs = list(records)
    n = len(recs)
    if n == 0:
        raise TrainingError("no records to train on: give a corpus with records, or ingest one first")
    marked, rule = heldout_flags(recs, heldout_fraction, seed)
    carved = any(marked) and "hash" in rule
    is_held = np.array(marked, dtype=bool)

    # the validation split is taken from the non-heldout records
    rest = [i for i in range(n) if not is_held[i]]
    probe = [Sample(recs[i].prompt, recs[i].response, id=recs[i].id) for i in rest]
    _, val_s = split_validation(probe, val_fraction, seed)
    val_ids = {s.id for s in val_s}
    is_val = np.array([recs[i].id in val_ids for i in range(n)], dtype=bool)
    is_train = ~is_held & ~is_val

    if embedder is None and doc_embeddings is None:
        embedder = load_embedder()
    if doc_embeddings is None:
        texts = [_embed_text(r, embed_field) for r in recs]
        doc_embeddings = embedder.embed(texts)
    if embed_field == "prompt" or embedder is None:
        q = doc_embeddings
    else:
        q = embedder.embed([r.prompt for r in recs])
    prompts = np.array([_norm(r.prompt) for r in recs], dtype=object)
    resps = np.array([_norm(r.response) for r in recs], dtype=object)
    same = (prompts[:, None] == prompts[None, :]) | (resps[:, None] == resps[None, :])

    nb_train = nearest_neighbours(q, doc_embeddings, is_train, k, dup_threshold, same)
    nb_eval = nearest_neighbours(q, doc_embeddings, is_train | is_val, k, dup_threshold, same)

    def sample(i: int, nb: list[list[int]]) -> Sample:
        r = recs[i]
        return Sample(r.prompt, r.response, [(recs[j].prompt, recs[j].response) for j in nb[i]], id=r.id)

    data = RetrievalData(
        train=[sample(i, nb_train) for i in range(n) if is_train[i]],
        val=[sample(i, nb_eval) for i in range(n) if is_val[i]],
        heldout=[sample(i, nb_eval) for i in range(n) if is_held[i]],
    )
    data.info = {
        "records": n,
        "train": len(data.train),
        "val": len(data.val),
        "heldout": len(data.heldout),
        "heldout_carved_by_hash": carved,
        "k": k,
        "dup_threshold": dup_threshold,
        "embedding_model": getattr(embedder, "name", None),
        "embed_field": embed_field,
    }
    return data


def _embed_text(r: CorpusRecord, embed_field: str) -> str:
    if embed_field == "both":
        return f"{r.prompt}\n{r.response}"
    return r.response if embed_field == "response" else r.prompt


def load_data(
    *,
    sources: Sequence[str | Path] | None = None,
    collection: Any = None,
    k: int = 4,
    val_fraction: float = 0.05,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = 0,
    embedding_model: str | None = None,
    embed_field: str = "prompt",
) -> RetrievalData:
    """Records from files (`sources`) or an opened Chroma collection, ready for training and evaluation."""

    embedder = load_embedder(embedding_model)
    if sources:
        recs, docs = records_from_files(sources), None
    elif collection is not None:
        recs, docs = records_from_chroma(collection)
        embed_field = (collection.metadata or {}).get("embed_field", embed_field)
    else:
        raise UsageError("give corpus files/folders or an ingested collection")
    return build_samples(
        recs,
        embedder=embedder,
        doc_embeddings=docs,
        k=k,
        val_fraction=val_fraction,
        heldout_fraction=heldout_fraction,
        seed=seed,
        embed_field=embed_field,
    )
