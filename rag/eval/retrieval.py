"""`shvayambhu eval retrieval`: embed a dataset into a throwaway Chroma collection, search, and score the run.

Scores are cosine similarities recomputed exactly (float32 dot products of normalised vectors, as MTEB's exact
search computes them) for the documents Chroma returns, so only HNSW misses can differ from an exact search;
`exact=True` skips Chroma and searches by brute force, which is MTEB's method. With MMR the run keeps MMR's
selection order. `mode` picks dense, lexical (BM25 over the embedded text) or hybrid (the two fused), or `all`
to score every mode in one run over the same embeddings; lexical and hybrid runs are ranked by their own order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.chroma_compat import ephemeral_client
from index.embed import load_embedder
from index.errors import UsageError
from index.fusion import FusionOptions, fuse
from index.lexical import LexicalIndex
from index.progress import progress_bar
from index.retrieve import DEFAULT_MODE, HYBRID_DEPTH, MODES, Hit, mmr_select, query_vector
from rag.eval.beir import (
    EMBED_ALIASES,
    EMBED_FIELDS,
    BeirError,
    RetrievalDataset,
    heldout_dataset,
    load_beir,
    unknown_embed,
)
from rag.eval.metrics import DEFAULT_KS, evaluate_run, parse_ks, write_trec_run

ANN_CHECK_LIMIT = 5e8  # queries x docs above which the exact cross-check of Chroma's top 10 is skipped


@dataclass
class RetrievalOptions:
    """How a retrieval evaluation searches."""

    ks: tuple[int, ...] = DEFAULT_KS
    embed: str = "title_text"  # title_text | title | text (prompt | response | both for our corpus)
    mmr: bool = False
    mmr_lambda: float = 0.5
    fetch_k: int = 20  # MMR candidates; raised to max(ks) so every cutoff has a full list
    exact: bool = False  # brute-force search instead of Chroma's HNSW index
    ignore_identical_ids: bool = False  # drop a document whose id equals the query id (BEIR's ArguAna rule)
    ef_search: int | None = None  # HNSW search breadth; default max(256, 2 * max(ks))
    batch_size: int = 64
    mode: str = DEFAULT_MODE  # dense | lexical | hybrid | all
    fusion: FusionOptions = field(default_factory=FusionOptions)


@dataclass
class RetrievalReport:
    """Mean metrics, counts, timings (seconds), the run itself and each query's metrics."""

    metrics: dict[str, float]
    queries: int
    docs: int
    timings: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    run: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    modes: dict[str, dict[str, float]] = field(default_factory=dict)  # every mode's mean metrics (mode="all")

    def to_json(self) -> dict[str, Any]:
        """The `--json` object: metrics, queries, docs, timings, then what was evaluated and how."""
        return {
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "queries": self.queries,
            "docs": self.docs,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            **self.info,
            **(
                {"modes": {m: {k: round(v, 6) for k, v in ms.items()} for m, ms in self.modes.items()}}
                if len(self.modes) > 1
                else {}
            ),
        }


def _embed_all(embedder: Any, texts: list[str], batch_size: int, label: str, progress: Any) -> np.ndarray:
    chunk = max(batch_size * 16, 1)
    task = progress.add_task(label, total=len(texts))
    parts = []
    for i in range(0, len(texts), chunk):
        part = texts[i : i + chunk]
        parts.append(np.asarray(embedder.embed(part, batch_size=batch_size), dtype=np.float32))
        progress.advance(task, len(part))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def throwaway_client() -> Any:
    """An in-memory Chroma client: nothing an evaluation indexes can reach the user's store."""
    return ephemeral_client()


def exact_search(queries: np.ndarray, docs: np.ndarray, n: int, block: int = 256) -> list[list[tuple[int, float]]]:
    """Brute-force top-n rows of `docs` for each row of `queries` by dot product, best first."""
    n = min(n, len(docs))
    out: list[list[tuple[int, float]]] = []
    for i in range(0, len(queries), block):
        s = queries[i : i + block] @ docs.T
        if n < s.shape[1]:
            idx = np.argpartition(-s, n - 1, axis=1)[:, :n]
        else:
            idx = np.tile(np.arange(s.shape[1]), (len(s), 1))
        for row, cand in zip(s, idx, strict=True):
            order = cand[np.argsort(-row[cand], kind="stable")]
            out.append([(int(j), float(row[j])) for j in order])
    return out


def _mmr(q: np.ndarray, D: np.ndarray, hits: list[tuple[int, float]], n: int, lam: float) -> list[tuple[int, float]]:

    cands = [Hit(id=str(r), score=s, prompt="", response="", embedding=D[r]) for r, s in hits]
    return [(int(h.id), h.score) for h in mmr_select(q, cands, n, lam)]


def _chroma_search(
    client: Any,
    doc_ids: list[str],
    D: np.ndarray,
    Q: np.ndarray,
    n: int,
    opts: RetrievalOptions,
    progress: Any,
    timings: dict[str, float],
) -> list[list[tuple[int, float]]]:
    """Index into a uuid-named collection, search, delete it: rows and exact cosines in Chroma's order."""
    ef = opts.ef_search or max(256, 2 * n)
    name = f"eval-{uuid.uuid4().hex}"
    hnsw = {"space": "cosine", "ef_search": max(ef, n), "ef_construction": max(200, ef), "max_neighbors": 32}
    col = client.create_collection(
        name,
        embedding_function=None,
        configuration={"hnsw": hnsw},
        metadata={"purpose": "shvayambhu eval retrieval (throwaway)"},
    )
    row_of = {d: i for i, d in enumerate(doc_ids)}
    try:
        t = time.perf_counter()
        step = max(1, min(int(client.get_max_batch_size()), 4096))
        task = progress.add_task("indexing", total=len(doc_ids))
        for i in range(0, len(doc_ids), step):
            col.add(ids=doc_ids[i : i + step], embeddings=D[i : i + step])
            progress.advance(task, len(doc_ids[i : i + step]))
        timings["index"] = time.perf_counter() - t

        t = time.perf_counter()
        out: list[list[tuple[int, float]]] = []
        task = progress.add_task("searching", total=len(Q))
        if opts.mmr:
            for q in Q:
                hits = query_vector(col, q, k=n, mmr=True, fetch_k=max(opts.fetch_k, n), mmr_lambda=opts.mmr_lambda)
                out.append([(row_of[h.id], float(D[row_of[h.id]] @ q)) for h in hits])
                progress.advance(task)
        else:
            for i in range(0, len(Q), 64):
                res = col.query(query_embeddings=Q[i : i + 64], n_results=n, include=["distances"])
                for q, ids in zip(Q[i : i + 64], res["ids"], strict=True):
                    rows = [row_of[d] for d in ids]
                    out.append(list(zip(rows, (D[rows] @ q).tolist(), strict=True)))
                progress.advance(task, len(Q[i : i + 64]))
        timings["search"] = time.perf_counter() - t
        return out
    finally:
        try:
            client.delete_collection(name)
        except Exception:  # pragma: no cover - best effort; an ephemeral client vanishes anyway
            pass


def run_modes(mode: str) -> tuple[str, ...]:
    """The modes a `mode` option asks for: one of MODES, or all of them."""
    if mode == "all":
        return MODES
    if mode not in MODES:
        raise UsageError(f"retrieval mode must be one of {', '.join(MODES)} or all, not {mode!r}")
    return (mode,)


def _lexical_runs(
    texts: list[str], qtexts: list[str], depth: int, progress: Any, timings: dict[str, float]
) -> list[list[tuple[int, float]]]:
    """BM25 top-`depth` rows per query over the texts that were embedded."""
    t = time.perf_counter()
    index = LexicalIndex.build([str(i) for i in range(len(texts))], texts)
    timings["lexical_index"] = time.perf_counter() - t
    t = time.perf_counter()
    task = progress.add_task("lexical search", total=len(qtexts))
    out = []
    for q in qtexts:
        out.append([(int(i), s) for i, s in index.search(q, depth)])
        progress.advance(task)
    timings["lexical_search"] = time.perf_counter() - t
    return out


def _ranked(
    mode: str,
    dense: list[tuple[int, float]],
    lexical: list[tuple[int, float]],
    q: np.ndarray,
    D: np.ndarray,
    n: int,
    opts: RetrievalOptions,
) -> list[tuple[int, float]]:
    """One query's ranked rows in `mode` (with MMR over the mode's candidates when asked)."""
    if mode == "dense":
        return dense[:n] if not opts.mmr else dense
    if mode == "lexical":
        cands = lexical
    else:
        fused = fuse([(str(r), s) for r, s in dense], [(str(r), s) for r, s in lexical], opts.fusion)
        cands = [(int(r), s) for r, s in fused]
    if opts.mmr:
        pool = cands[: max(opts.fetch_k, n)]
        return _mmr(q, D, [(r, float(D[r] @ q)) for r, _ in pool], n, opts.mmr_lambda)
    return cands[:n]


def evaluate_retrieval(
    dataset: RetrievalDataset,
    embedder: Any,
    options: RetrievalOptions | None = None,
    *,
    client: Any = None,
    progress: bool = False,
) -> RetrievalReport:
    """Embed, index, search and score `dataset`; `client` defaults to a throwaway in-memory Chroma."""
    opts = options or RetrievalOptions()
    ks = parse_ks(opts.ks)
    embed = EMBED_ALIASES.get(opts.embed, opts.embed)
    if embed not in EMBED_FIELDS:
        raise BeirError(unknown_embed(opts.embed))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    doc_ids = list(dataset.corpus)
    qids = [q for q in dataset.queries if q in dataset.qrels]
    depth = max(ks) + (1 if opts.ignore_identical_ids else 0)
    n = min(depth, len(doc_ids))
    modes = run_modes(opts.mode)
    # dense candidates: hybrid fuses deeper lists than the cutoff; MMR re-ranks its own candidates
    n_dense = min(max(n, HYBRID_DEPTH), len(doc_ids)) if "hybrid" in modes else n
    texts = [dataset.corpus[d].embed_text(embed) for d in doc_ids]
    with progress_bar(progress) as bar:
        t = time.perf_counter()
        D = _embed_all(embedder, texts, opts.batch_size, "embedding corpus", bar)
        timings["embed_corpus"] = time.perf_counter() - t
        t = time.perf_counter()
        qtexts = [dataset.queries[q] for q in qids]
        Q = _embed_all(embedder, qtexts, opts.batch_size, "embedding queries", bar)
        timings["embed_queries"] = time.perf_counter() - t
        if opts.exact:
            t = time.perf_counter()
            dense_mmr = opts.mmr and "dense" in modes
            found = exact_search(Q, D, max(opts.fetch_k, n_dense) if dense_mmr else n_dense)
            if dense_mmr:
                found = [_mmr(q, D, hits, n, opts.mmr_lambda) for q, hits in zip(Q, found, strict=True)]
            timings["index"] = 0.0
            timings["search"] = time.perf_counter() - t
        else:
            dense_opts = opts if "dense" in modes else RetrievalOptions(mmr=False)
            found = _chroma_search(client or throwaway_client(), doc_ids, D, Q, n_dense, dense_opts, bar, timings)
        lexical = [[] for _ in qids]
        if "lexical" in modes or "hybrid" in modes:
            lexical = _lexical_runs(texts, qtexts, max(n_dense, opts.fetch_k if opts.mmr else 0), bar, timings)

    t = time.perf_counter()
    per_mode = {}
    for mode in modes:
        run: dict[str, dict[str, float]] = {}
        for qid, q, dense, lex in zip(qids, Q, found, lexical, strict=True):
            hits = dense if mode == "dense" and opts.mmr else _ranked(mode, dense, lex, q, D, n, opts)
            if mode == "dense" and not opts.mmr:
                scores = {doc_ids[r]: s for r, s in hits[:n]}
            else:  # keep the mode's order: trec_eval ranks by score, so scores follow rank
                scores = {doc_ids[r]: float(len(hits) - i) for i, (r, _) in enumerate(hits)}
            if opts.ignore_identical_ids:
                scores.pop(qid, None)
            run[qid] = scores
        per_mode[mode] = (run, evaluate_run(dataset.qrels, run, ks))
    timings["metrics"] = time.perf_counter() - t
    run, ev = per_mode[DEFAULT_MODE if opts.mode == "all" else modes[0]]
    info: dict[str, Any] = {
        "dataset": dataset.name,
        "split": dataset.split,
        "model": getattr(embedder, "name", str(embedder)),
        "precision": getattr(embedder, "precision", None),
        "embed": embed,
        "search": "exact" if opts.exact else "chroma-hnsw",
        "mmr": opts.mmr,
        "mode": opts.mode,
        "ks": list(ks),
        "queries_without_positives": ev.without_positives,
    }
    if "hybrid" in modes:
        f = opts.fusion
        info["fusion"] = (
            {"method": f.method, "rrf_k": f.rrf_k} if f.method == "rrf" else {"method": f.method, "alpha": f.alpha}
        )
    if opts.mmr:
        info["mmr_lambda"] = opts.mmr_lambda
        info["fetch_k"] = max(opts.fetch_k, n)
    if not opts.exact and not opts.mmr and "dense" in modes and len(Q) * len(D) <= ANN_CHECK_LIMIT and len(D):
        t = time.perf_counter()
        kk = min(10, len(D))
        truth = exact_search(Q, D, kk)
        got = sum(len({r for r, _ in a[:kk]} & {r for r, _ in b}) for a, b in zip(found, truth, strict=True))
        info["ann_recall@10"] = round(got / max(1, kk * len(Q)), 6)
        timings["ann_check"] = time.perf_counter() - t
    if dataset.info:
        info["dataset_info"] = dataset.info
    if dataset.warnings:
        info["warnings"] = dataset.warnings
    timings["total"] = time.perf_counter() - t0
    by_mode = {m: e.mean for m, (_, e) in per_mode.items()}
    return RetrievalReport(ev.mean, ev.queries, len(doc_ids), timings, info, run, ev.per_query, by_mode)


def modes_table(report: RetrievalReport, metrics: Sequence[str] = ("ndcg@10", "recall@10", "mrr@10")) -> str:
    """Every evaluated mode side by side, one row a mode (for `eval retrieval --mode all`)."""
    names = [m for m in metrics if any(m in ms for ms in report.modes.values())]
    lines = ["mode     " + "".join(f"{m:>12}" for m in names)]
    for mode, ms in report.modes.items():
        lines.append(f"{mode:<9}" + "".join(f"{ms.get(m, float('nan')):>12.4f}" for m in names))
    return "\n".join(lines)


def retrieval_command(
    dataset: str | Path | None = None,
    *,
    split: str = "test",
    corpus: Sequence[str | Path] | None = None,
    model: str | None = None,
    embed: str | None = None,
    k: str | Sequence[int] = DEFAULT_KS,
    mmr: bool = False,
    mmr_lambda: float = 0.5,
    fetch_k: int = 20,
    exact: bool = False,
    ignore_identical_ids: bool = False,
    strict: bool = False,
    run_file: str | Path | None = None,
    client: Any = None,
    embedder: Any = None,
    progress: bool = True,
    mode: str = DEFAULT_MODE,
    fusion: FusionOptions | None = None,
) -> RetrievalReport:
    """The body of `shvayambhu eval retrieval`: a BEIR folder when `dataset` is given, else the held-out
    split of `corpus` (default: the bundled corpus). Errors for the user raise BeirError or ValueError."""
    t = time.perf_counter()
    if dataset is not None:
        data = load_beir(dataset, split, strict=strict)
        default_embed = "title_text"
    else:
        data = heldout_dataset(corpus)
        default_embed = "title"  # the prompt: what the product's collection embeds by default
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    if embedder is None:
        embedder = load_embedder(model)
    t_model = time.perf_counter() - t
    opts = RetrievalOptions(
        ks=parse_ks(k),
        embed=embed or default_embed,
        mmr=mmr,
        mmr_lambda=mmr_lambda,
        fetch_k=fetch_k,
        exact=exact,
        ignore_identical_ids=ignore_identical_ids,
        mode=mode,
        fusion=fusion or FusionOptions(),
    )
    run_modes(mode)  # a bad mode is a usage error before any model is loaded
    report = evaluate_retrieval(data, embedder, opts, client=client, progress=progress)
    report.timings = {"load_data": t_load, "load_model": t_model, **report.timings}
    report.timings["total"] += t_load + t_model
    if run_file:
        write_trec_run(str(run_file), report.run)
        report.info["run_file"] = str(run_file)
    return report
