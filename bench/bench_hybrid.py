"""Retrieval quality by mode (dense, lexical BM25, hybrid RRF / convex) and by embedding precision (fp32, int8).

Datasets, all offline: `paraphrase` (the seed corpus: each question's second phrasing is the query, the original
record the one relevant document, the query's own record left out), `rare_terms` (bench/data/rare_terms: error
codes, part numbers, names), `code_symptom` (bench/data/code_symptom: a code shared by three documents plus the
symptom in other words) and `mixed` (all corpora and query sets in one index). Exact search, so the
figures do not depend on HNSW. Prints nDCG@10 and recall@10; run from the repo root:

    python bench/bench_hybrid.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from index.embed import load_embedder  # noqa: E402
from index.fusion import FusionOptions  # noqa: E402
from rag.eval.beir import Doc, RetrievalDataset, load_beir  # noqa: E402
from rag.eval.metrics import evaluate_run  # noqa: E402
from rag.eval.retrieval import RetrievalOptions, evaluate_retrieval, exact_search  # noqa: E402

SEED = REPO / "ingest" / "data" / "seed.jsonl"
RARE = REPO / "bench" / "data" / "rare_terms"
CODE_SYMPTOM = REPO / "bench" / "data" / "code_symptom"


def paraphrase_dataset() -> RetrievalDataset:
    """Seed lines 2i and 2i+1 ask the same question: query = 2i+1's prompt, relevant = record 2i."""
    rows = [json.loads(line) for line in SEED.open(encoding="utf-8")]
    corpus = {f"s{i}": Doc(r["prompt"], r["response"]) for i, r in enumerate(rows)}
    queries = {f"s{2 * i + 1}": rows[2 * i + 1]["prompt"] for i in range(len(rows) // 2)}
    qrels = {f"s{2 * i + 1}": {f"s{2 * i}": 1} for i in range(len(rows) // 2)}
    return RetrievalDataset("paraphrase", corpus, queries, qrels)


class Cached:
    """An embedder that remembers every text's vector, so each mode and fusion scores the same embeddings."""

    def __init__(self, embedder) -> None:
        self.inner, self.name, self.dim, self.memo = embedder, embedder.name, embedder.dim, {}

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            self.memo.update(zip(todo, self.inner.embed(todo, batch_size=batch_size), strict=True))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def mixed_dataset(*sets: RetrievalDataset) -> RetrievalDataset:
    out = RetrievalDataset("mixed", {}, {}, {})
    for ds in sets:
        out.corpus.update(ds.corpus)
        out.queries.update(ds.queries)
        out.qrels.update(ds.qrels)
    return out


def quality(ds: RetrievalDataset, embedder, embed: str, fusion: FusionOptions) -> dict[str, float]:
    """nDCG@10 per mode; the query's own record is left out (the paraphrase rule)."""
    opts = RetrievalOptions(
        ks=(10,),
        embed=embed,
        exact=True,
        mode="all",
        fusion=fusion,
        ignore_identical_ids=ds.name in ("paraphrase", "mixed"),
    )
    rep = evaluate_retrieval(ds, embedder, opts)
    return {m: ms["ndcg@10"] for m, ms in rep.modes.items()}


def cross_precision(ds: RetrievalDataset, fp32, int8, embed: str) -> dict[str, float]:
    """Dense nDCG@10 for every (corpus precision, query precision) pair, and cosine(int8, fp32) of the vectors."""
    doc_ids = list(ds.corpus)
    qids = [q for q in ds.queries if q in ds.qrels]
    texts = [ds.corpus[d].embed_text(embed) for d in doc_ids]
    qtexts = [ds.queries[q] for q in qids]
    D = {"fp32": fp32.embed(texts), "int8": int8.embed(texts)}
    Q = {"fp32": fp32.embed(qtexts), "int8": int8.embed(qtexts)}
    out = {}
    for dp in D:
        for qp in Q:
            found = exact_search(Q[qp], D[dp], 11)
            run = {}
            for qid, hits in zip(qids, found, strict=True):
                scores = {doc_ids[r]: s for r, s in hits}
                scores.pop(qid, None)
                run[qid] = scores
            out[f"docs {dp} / queries {qp}"] = evaluate_run(ds.qrels, run, (10,)).mean["ndcg@10"]
    cos = (D["fp32"] * D["int8"]).sum(1)
    out["cosine docs mean"], out["cosine docs min"] = float(cos.mean()), float(cos.min())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--embed", default="title_text", help="title_text (BEIR's rule) or title (the prompt alone)")
    args = ap.parse_args()
    fp32, int8 = Cached(load_embedder(precision="fp32")), Cached(load_embedder(precision="int8"))
    para, rare, cs = paraphrase_dataset(), load_beir(RARE), load_beir(CODE_SYMPTOM)
    rare.name, cs.name = "rare_terms", "code_symptom"
    sets = [para, rare, cs, mixed_dataset(para, rare, cs)]
    fusions = {
        "rrf k=60": FusionOptions(),
        "rrf k=10": FusionOptions(rrf_k=10),
        "cvx a=0.3": FusionOptions("convex", alpha=0.3),
        "cvx a=0.5": FusionOptions("convex", alpha=0.5),
        "cvx a=0.7": FusionOptions("convex", alpha=0.7),
    }
    print(f"nDCG@10, exact search, embed={args.embed}, all-MiniLM-L6-v2; hybrid columns by fusion")
    print(f"{'dataset':<12}{'precision':<10}{'dense':>8}{'lexical':>9}" + "".join(f"{f:>11}" for f in fusions))
    for ds in sets:
        for name, emb in (("fp32", fp32), ("int8", int8)):
            t = time.perf_counter()
            r = {f: quality(ds, emb, args.embed, o) for f, o in fusions.items()}
            base = r["rrf k=60"]
            print(
                f"{ds.name:<12}{name:<10}{base['dense']:>8.4f}{base['lexical']:>9.4f}"
                + "".join(f"{r[f]['hybrid']:>11.4f}" for f in fusions)
                + f"   ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
    print("\nint8 vs fp32, dense nDCG@10 (paraphrase) and vector agreement:")
    for k, v in cross_precision(para, fp32, int8, args.embed).items():
        print(f"  {k:<28}{v:.4f}")
    long_texts = [json.loads(line)["response"] for line in SEED.open(encoding="utf-8")]
    cos = (fp32.embed(long_texts) * int8.embed(long_texts)).sum(1)
    print(f"  long documents (seed responses, {len(long_texts)}): cosine mean {cos.mean():.4f} min {cos.min():.4f}")
    print(f"  probe p1 {np.percentile(cos, 1):.4f}")


if __name__ == "__main__":
    main()
