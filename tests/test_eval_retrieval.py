"""Retrieval evaluation end to end on the tiny BEIR fixture, with the real embedding model and Chroma."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.eval.beir import Doc, RetrievalDataset, load_beir
from rag.eval.metrics import evaluate_run
from rag.eval.report import render_retrieval
from rag.eval.retrieval import RetrievalOptions, evaluate_retrieval, exact_search, retrieval_command

TINY = Path(__file__).parent / "fixtures" / "beir_tiny"


@pytest.fixture(scope="module")
def tiny_report(embedder):
    return evaluate_retrieval(load_beir(TINY), embedder)


def test_report_shape_and_counts(tiny_report):
    out = tiny_report.to_json()
    assert list(out)[:4] == ["metrics", "queries", "docs", "timings"]
    assert out["queries"] == 6 and out["docs"] == 12
    assert {"ndcg@10", "mrr@10", "recall@100", "precision@5", "map@10", "hit_rate@1", "map", "mrr"} <= set(
        out["metrics"]
    )
    assert {"embed_corpus", "index", "search", "total"} <= set(out["timings"])
    assert out["search"] == "chroma-hnsw" and out["embed"] == "title_text" and out["ann_recall@10"] == 1.0
    json.dumps(out)
    assert tiny_report.metrics["ndcg@10"] > 0.9  # the fixture's queries are easy for MiniLM
    assert "nDCG" in render_retrieval(tiny_report)


def test_run_scored_by_pytrec_eval_gives_the_same_means(tiny_report):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = load_beir(TINY).qrels
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,3,10", "recall.1,3", "map_cut.10"}).evaluate(
        tiny_report.run
    )
    for ours, theirs in (
        ("ndcg@1", "ndcg_cut_1"),
        ("ndcg@3", "ndcg_cut_3"),
        ("ndcg@10", "ndcg_cut_10"),
        ("recall@1", "recall_1"),
        ("recall@3", "recall_3"),
        ("map@10", "map_cut_10"),
    ):
        mean = sum(v[theirs] for v in per_query.values()) / len(per_query)
        assert tiny_report.metrics[ours] == pytest.approx(mean, abs=1e-12)


def test_exact_search_matches_chroma(tiny_report, embedder):
    exact = evaluate_retrieval(load_beir(TINY), embedder, RetrievalOptions(exact=True))
    assert exact.info["search"] == "exact"
    for q, docs in tiny_report.run.items():  # same documents with the same (exactly recomputed) cosines
        assert exact.run[q] == pytest.approx(docs, abs=1e-6)
    assert exact.metrics == pytest.approx(tiny_report.metrics)


def test_exact_search_orders_best_first():
    import numpy as np

    docs = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.7, 0.2, 0.0]], dtype=np.float32)
    assert [r for r, _ in exact_search(q, docs, 3)[0]] == [1, 2, 0]
    assert len(exact_search(q, docs, 10)[0]) == 4


def test_mmr_keeps_its_order_as_scores(embedder):
    rep = evaluate_retrieval(load_beir(TINY), embedder, RetrievalOptions(ks=(1, 3, 5), mmr=True, mmr_lambda=0.3))
    assert rep.info["mmr"] is True and rep.info["fetch_k"] == 20
    for docs in rep.run.values():
        assert sorted(docs.values(), reverse=True) == [5.0, 4.0, 3.0, 2.0, 1.0]


def test_ignore_identical_ids_and_throwaway_collection(embedder, tmp_path: Path):
    from index.store import open_client

    ds = RetrievalDataset(
        "same-ids",
        {"a": Doc("", "the cat sat on the mat"), "b": Doc("", "a dog chased the cat")},
        {"a": "the cat sat on the mat"},
        {"a": {"b": 1}},
    )
    client = open_client(tmp_path)
    kept = evaluate_retrieval(ds, embedder, RetrievalOptions(ks=(1,)), client=client)
    assert kept.metrics["ndcg@1"] == 0.0  # the query finds itself first
    dropped = evaluate_retrieval(ds, embedder, RetrievalOptions(ks=(1,), ignore_identical_ids=True), client=client)
    assert "a" not in dropped.run["a"] and dropped.metrics["ndcg@1"] == 1.0
    assert client.list_collections() == []  # the throwaway collections are gone


def test_command_writes_a_trec_run_and_reads_our_heldout_split(embedder, tmp_path: Path):
    rep = retrieval_command(TINY, k="1,10", run_file=tmp_path / "run.trec", embedder=embedder, progress=False)
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "d1", "1"] and rep.info["ks"] == [1, 10]
    assert {"load_data", "load_model", "total"} <= set(rep.timings)

    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"prompt": "How do I boil an egg?", "response": "Simmer it for nine minutes.", "split": "heldout"},
        {"prompt": "What is the capital of France?", "response": "Paris."},
        {
            "prompt": "How do tides work?",
            "response": "The moon's gravity pulls the oceans.",
            "split": "heldout",
        },
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    held = retrieval_command(corpus=[corpus], embedder=embedder, progress=False, embed="response")
    assert held.queries == 2 and held.docs == 3 and held.info["embed"] == "text"
    assert held.metrics["hit_rate@3"] == 1.0
    assert evaluate_run(load_beir(TINY).qrels, {}).queries == 0
