"""Search latency, dense vs hybrid, at 10,000 and 100,000 records, and the BM25 index's build time, memory and
size. Prints figures; run from the repo root:

    python bench/bench_search.py --records 10000 100000

The store is filled without the embedding model so that 100,000 records fit the time a shared 2-core machine
has: texts are bench_ingest's seed-shaped corpus (prompt embedded, as the product does), vectors are the real
model's vectors of the 880 seed prompts (int8) plus small Gaussian noise, renormalised. Latency is measured
through `index.retrieve.search` with the real model embedding every query, dense and hybrid interleaved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_ingest import make_corpus, phase_search  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_fill(corpus: str, data_dir: str) -> dict:
    import numpy as np

    from index.embed import load_embedder
    from index.store import get_collection, open_client

    rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    emb = load_embedder(precision="int8")
    base = emb.embed([r["prompt"] for r in rows[:880]])
    rng = np.random.default_rng(0)
    col = get_collection(
        open_client(data_dir), "corpus", model=emb.name, dim=emb.dim, embed_field="prompt", precision="int8"
    )
    t = time.perf_counter()
    for i in range(0, len(rows), 2000):
        part = rows[i : i + 2000]
        v = base[np.arange(i, i + len(part)) % len(base)] + rng.normal(0, 0.03, (len(part), emb.dim))
        v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        col.add(
            ids=[hashlib.sha256(r["prompt"].encode()).hexdigest()[:32] for r in part],
            embeddings=v,
            documents=[r["prompt"] for r in part],
            metadatas=[{"prompt": r["prompt"], "response": r["response"], "category": r["category"]} for r in part],
        )
    return {"seconds": time.perf_counter() - t, "records": col.count()}


def phase_bm25(data_dir: str) -> dict:
    """Rebuild the lexical index from the collection: time, peak RSS growth, size on disk; and the same build
    over prompt + response (what `--embed both` indexes)."""
    from index.embed import DEFAULT_MODEL
    from index.lexical import LexicalIndex, LexicalStore
    from index.store import get_collection, open_client

    col = get_collection(open_client(data_dir), "corpus", model=DEFAULT_MODEL, dim=None, create=False)
    before = rss_mb()
    store = LexicalStore.for_collection(data_dir, col)
    t = time.perf_counter()
    store.sync(col)
    build = time.perf_counter() - t
    after = rss_mb()
    size = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file()) / 1e6
    t = time.perf_counter()
    LexicalIndex.load(store.root)
    load = time.perf_counter() - t
    metas = []
    for offset in range(0, col.count(), 10_000):
        metas += col.get(include=["metadatas"], limit=10_000, offset=offset)["metadatas"]
    texts = [f"{m['prompt']}\n{m['response']}" for m in metas]
    before_both = rss_mb()
    t = time.perf_counter()
    LexicalIndex.build([str(i) for i in range(len(texts))], texts)
    both = time.perf_counter() - t
    return {
        "build_s": build,
        "rss_growth_mb": after - before,
        "disk_mb": size,
        "load_s": load,
        "build_both_s": both,
        "rss_growth_both_mb": rss_mb() - before_both,
        "records": len(texts),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        name, *rest = args.phase
        fn = {"fill": phase_fill, "bm25": phase_bm25, "search": phase_search}[name]
        result = fn(rest[0], int(rest[1]), *rest[2:]) if name == "search" else fn(*rest)
        print(json.dumps(result))
        return
    for n in args.records:
        with tempfile.TemporaryDirectory() as tmp:
            corpus, data = Path(tmp) / "corpus.jsonl", f"{tmp}/data"
            make_corpus(corpus, n)
            fill = run_phase_here("fill", str(corpus), data)
            bm25 = run_phase_here("bm25", data)
            s = run_phase_here("search", data, str(args.queries), "int8")
        print(f"{n} records (filled in {fill['seconds']:.0f} s):")
        print(
            f"  BM25 rebuild from Chroma (prompts): {bm25['build_s']:.2f} s, peak RSS +{bm25['rss_growth_mb']:.0f} MB, "
            f"{bm25['disk_mb']:.1f} MB on disk, load {bm25['load_s']:.2f} s; over prompt + response: "
            f"{bm25['build_both_s']:.2f} s, peak RSS +{bm25['rss_growth_both_mb']:.0f} MB"
        )
        print(
            f"  search ({s['queries']} queries, warm): dense p50 {s['dense_p50_ms']:.1f} ms p95 "
            f"{s['dense_p95_ms']:.1f}; hybrid p50 {s['hybrid_p50_ms']:.1f} ms p95 {s['hybrid_p95_ms']:.1f}; "
            f"hybrid/dense p50 {s['hybrid_p50_ms'] / s['dense_p50_ms']:.2f}x (target <= 1.5x)",
            flush=True,
        )


def run_phase_here(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"phase {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
