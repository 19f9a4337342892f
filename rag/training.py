"""Retrieval-conditioned training data for the BLT, and the `train` / `eval bpb` command bodies.

Records come from the ingested Chroma collection or from files (through the ingest readers). Each record
gets its k nearest neighbours as exemplars, with the record itself and its near-duplicates (cosine > 0.95,
or the same normalised prompt or response) left out. Records whose split is "heldout" are the evaluation
set: they are never trained on and never serve as exemplars. Exemplars of training records come from the
training records only; validation and heldout records draw on training + validation records.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blt import presets
from blt import train as T
from blt.bpb import bpb_report
from blt.data import DataConfig, Sample, clip_response, split_validation
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
            out.setdefault(rec.id, CorpusRecord(rec.id, rec.prompt, rec.response, rec.category, split_name(rec.split)))
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


# ---- command bodies (the CLI wraps these) ----

STAGES = ("entropy", "blt", "baseline")


def train_command(
    *,
    out_dir: str | Path,
    sources: Sequence[str | Path] | None = None,
    collection: Any = None,
    stages: Sequence[str] = STAGES,
    size: str = "small",
    max_minutes: float | None = 30.0,
    entropy_share: float = 0.2,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    k: int = 4,
    max_bytes: int | None = None,
    exemplar_bytes: int | None = 256,
    dropout: float = 0.1,
    eval_every: int | None = None,
    patience: int | None = 5,
    seed: int = 0,
    heldout_fraction: float = HELDOUT_FRACTION,
    val_fraction: float = 0.05,
    resume: bool = True,
    progress: bool = True,
    command: str | None = None,
    embedding_model: str | None = None,
    response_bytes: int | None = None,
    copy_warmup: float = 0.0,
) -> dict[str, Any]:
    """`shvayambhu train`: the entropy model, then the BLT on its patches, then the byte-transformer baseline
    of equal non-embedding size for the BLT's wall time. Each stage resumes from its folder under out_dir
    (entropy/, blt/, baseline/: best/ and last/ checkpoints, log.jsonl). Returns the stage summaries.

    Time: the entropy model gets entropy_share of max_minutes, the BLT the rest (half of the rest when the
    baseline is trained too). `sources` (files/folders) or an opened corpus `collection` give the records.
    Context: responses come first (a long one leaves little room), then up to k exemplars, each response
    clipped to exemplar_bytes, truncated from the least relevant end. `copy_warmup` is DataConfig.self_copy.
    """

    unknown = set(stages) - set(STAGES)
    if unknown:
        raise UsageError(f"unknown stage(s) {sorted(unknown)}: use {', '.join(STAGES)}")
    if size not in presets.SIZES:
        raise UsageError(f"unknown size {size!r}: use {', '.join(presets.SIZES)}")
    command = command or " ".join(sys.argv)
    data = load_data(
        sources=sources,
        collection=collection,
        k=k,
        val_fraction=val_fraction,
        heldout_fraction=heldout_fraction,
        seed=seed,
        embedding_model=embedding_model,
    )
    if response_bytes:  # shorter targets leave room in the context for the exemplars they should learn from
        data.train, data.val = ([clip_response(x, response_bytes) for x in part] for part in (data.train, data.val))
        data.info["response_bytes"] = response_bytes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(data.info, indent=2))
    max_bytes = max_bytes or presets.DEFAULT_MAX_BYTES[size]
    dc = DataConfig(
        max_len=max_bytes + 1,
        max_exemplars=k,
        exemplar_bytes=exemplar_bytes,
        response_bytes=response_bytes,
        self_copy=copy_warmup,
    )
    common: dict[str, Any] = {
        "max_bytes": max_bytes,
        "data": dc,
        "max_steps": max_steps,
        "progress": progress,
        "resume": resume,
        "batch_size": batch_size,
        "lr": lr,
        "eval_every": eval_every,
        "patience": patience,
        "seed": seed,
    }
    ent_cfg, blt_cfg = presets.model_configs(size, max_bytes, dropout)
    minutes = {"entropy": None, "blt": None}
    if max_minutes is not None:
        minutes["entropy"] = max_minutes * entropy_share
        rest = max_minutes - (minutes["entropy"] if "entropy" in stages else 0)
        minutes["blt"] = rest / 2 if "baseline" in stages else rest
    results: dict[str, Any] = {"data": data.info, "command": command}
    t0 = time.time()
    have_entropy = (out / "entropy" / "best").exists()
    if "entropy" in stages or ("blt" in stages and not have_entropy):
        cfg = presets.stage_config("entropy", size, out / "entropy", max_minutes=minutes["entropy"], **common)
        results["entropy"] = T.train_entropy(data.train, data.val, cfg, entropy_config=ent_cfg, command=command)
    if "blt" in stages:
        cfg = presets.stage_config("blt", size, out / "blt", max_minutes=minutes["blt"], **common)
        results["blt"] = T.train_blt(
            data.train, data.val, cfg, entropy_dir=out / "entropy", blt_config=blt_cfg, command=command
        )
    if "baseline" in stages:
        blt_seconds = results.get("blt", {}).get("train_seconds")
        base_minutes = blt_seconds / 60 if blt_seconds else minutes["blt"]
        cfg = presets.stage_config("baseline", size, out / "baseline", max_minutes=base_minutes, **common)
        results["baseline"] = T.train_baseline(data.train, data.val, cfg, blt_dir=out / "blt", command=command)
    results["seconds"] = time.time() - t0
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def eval_bpb_command(
    *,
    checkpoint: str | Path,
    baseline: str | Path | None = None,
    sources: Sequence[str | Path] | None = None,
    collection: Any = None,
    k: int | None = None,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = 0,
    batch_size: int = 8,
    compressors: bool = True,
    embedding_model: str | None = None,
    max_records: int | None = None,
    response_bytes: int | None = None,
) -> dict[str, Any]:
    """`shvayambhu eval bpb`: the heldout BPB table as a dict (rows, summary, markdown).

    `checkpoint` is a BLT checkpoint folder, its stage folder (blt/, best/ is used) or a run folder (the
    `train` output; its baseline/ is then used too unless `baseline` says otherwise). The exemplar count
    and size, and the response clip, default to what the BLT was trained with: a heldout response longer
    than the trained ones would push its exemplars out of the context.
    """
    from blt.checkpoint import load_checkpoint  # lazy: loads mlx

    blt_path = _best(checkpoint)
    blt = load_checkpoint(blt_path)
    if blt.kind != "blt":
        raise UsageError(f"{blt_path} holds a {blt.kind} checkpoint; give the BLT's (--baseline for the other)")
    if baseline is None and (Path(checkpoint) / "baseline" / "best").exists():
        baseline = Path(checkpoint) / "baseline"
    base = load_checkpoint(_best(baseline)) if baseline else None
    trained = (blt.metrics.get("train_config") or {}).get("data") or {}
    k = k if k is not None else int(trained.get("max_exemplars", 4))
    data = load_data(
        sources=sources,
        collection=collection,
        k=k,
        heldout_fraction=heldout_fraction,
        seed=seed,
        embedding_model=embedding_model,
    )
    held = data.heldout[:max_records] if max_records else data.heldout
    response_bytes = response_bytes or trained.get("response_bytes")
    if response_bytes:
        held = [clip_response(x, response_bytes) for x in held]
    if not held:
        raise TrainingError("no heldout records: mark some with split=heldout or pass heldout_fraction > 0")
    report = bpb_report(
        heldout=held,
        train=data.train + data.val,
        max_len=int(blt.config.max_bytes) + 1,
        blt=blt,
        baseline=base,
        batch_size=batch_size,
        max_exemplars=k,
        exemplar_bytes=trained.get("exemplar_bytes"),
        compressors=compressors,
    )
    report.update(
        {
            "data": data.info,
            "checkpoint": str(blt_path),
            "baseline_checkpoint": str(_best(baseline)) if baseline else None,
            "response_bytes": response_bytes,
        }
    )
    return report


def _best(path: str | Path) -> Path:
    """A checkpoint folder itself, else its best/ (a stage folder), else blt/best (a run folder)."""
    p = Path(path)
    for cand in (p, p / "best", p / "blt" / "best"):
        if (cand / "config.json").exists():
            return cand
    raise TrainingError(f"no checkpoint in {p} (nor in {p / 'best'} or {p / 'blt' / 'best'})")
