"""Ranking metrics against hand-computed values and, where installed, pytrec_eval and ir-measures."""

from __future__ import annotations

import math
import random

import pytest

from rag.eval.metrics import bootstrap_ci, evaluate_run, parse_ks, query_metrics, ranking, spearman

KS = (1, 3, 5, 10, 100)


def test_hand_computed_graded_query():
    # ranked d2 (grade 1), d4 (unjudged), d1 (grade 2), d3 (grade 0); two relevant documents
    rels = {"d1": 2, "d2": 1, "d3": 0}
    m = query_metrics(rels, {"d2": 0.9, "d4": 0.8, "d1": 0.7, "d3": 0.6}, ks=(1, 3))
    idcg3 = 2 + 1 / math.log2(3)
    assert m["ndcg@1"] == pytest.approx(1 / 2)  # gain 1 where the ideal has gain 2
    assert m["ndcg@3"] == pytest.approx((1 + 2 / 2) / idcg3)
    assert m["ndcg@3"] == pytest.approx(0.7601875, abs=1e-6)
    assert m["mrr@1"] == 1.0 and m["mrr"] == 1.0
    assert m["precision@1"] == 1.0 and m["precision@3"] == pytest.approx(2 / 3)
    assert m["recall@1"] == 0.5 and m["recall@3"] == 1.0
    assert m["map@1"] == pytest.approx(0.5)  # (1/1) / 2 relevant
    assert m["map@3"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["map"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["hit_rate@1"] == 1.0


def test_first_relevant_deeper_and_cutoffs():
    m = query_metrics({"x": 1}, {"a": 0.9, "b": 0.8, "x": 0.7}, ks=(1, 3, 5))
    assert m["mrr@1"] == 0.0 and m["mrr@3"] == pytest.approx(1 / 3) and m["mrr"] == pytest.approx(1 / 3)
    assert m["hit_rate@1"] == 0.0 and m["hit_rate@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(4))
    assert m["precision@5"] == pytest.approx(1 / 5)  # P@k divides by k even when fewer were retrieved


def test_ties_break_by_document_id_descending():
    # trec_eval orders equal scores by docno descending: b before a
    assert ranking({"a": 0.5, "b": 0.5, "c": 0.9}) == ["c", "b", "a"]
    m = query_metrics({"a": 1}, {"a": 0.5, "b": 0.5}, ks=(1, 2))
    assert m["mrr@2"] == 0.5 and m["ndcg@1"] == 0.0


def test_grade_zero_and_negative_are_not_relevant():
    m = query_metrics({"a": 0, "b": -1, "c": 1}, {"a": 0.9, "b": 0.8, "c": 0.7}, ks=(1, 3))
    assert m["recall@3"] == 1.0 and m["precision@1"] == 0.0 and m["mrr"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(4))  # a negative grade gains nothing


def test_averaging_follows_pytrec_eval():
    qrels = {"q1": {"d1": 1}, "q2": {"d1": 0}, "q3": {"d9": 1}}
    run = {"q1": {"d1": 1.0}, "q2": {"d1": 1.0}, "q4": {"d1": 1.0}}  # q3 not run, q4 not judged
    ev = evaluate_run(qrels, run, ks=(1,))
    assert sorted(ev.per_query) == ["q1", "q2"]  # q2 has only grade-0 judgements: evaluated, scores 0
    assert ev.mean["ndcg@1"] == 0.5 and ev.without_positives == 1
    assert evaluate_run({"q1": {"d1": 1}}, {"q1": {}}, ks=(1,)).mean["recall@1"] == 0.0


def test_nan_scores_and_bad_cutoffs_are_refused():
    with pytest.raises(ValueError, match="not a number"):
        ranking({"a": float("nan")})
    assert parse_ks("10, 1,3,3") == (1, 3, 10)
    for bad in ("", "0", "a,b", "-1"):
        with pytest.raises(ValueError):
            parse_ks(bad)


def _random_case(rng: random.Random) -> tuple[dict, dict]:
    docs = [f"d{i}" for i in range(rng.randint(1, 40))]
    qrels, run = {}, {}
    for q in range(rng.randint(1, 12)):
        judged = rng.sample(docs, rng.randint(1, min(8, len(docs))))
        qrels[f"q{q}"] = {d: rng.choice([-1, 0, 0, 1, 1, 2, 3]) for d in judged}
        if rng.random() < 0.9:  # coarse scores: many ties
            run[f"q{q}"] = {d: round(rng.uniform(-1, 1), 1) for d in rng.sample(docs, rng.randint(0, len(docs)))}
    return qrels, run


def test_agrees_with_pytrec_eval_on_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    names = {
        "ndcg": "ndcg_cut",
        "map": "map_cut",
        "recall": "recall",
        "precision": "P",
        "hit_rate": "success",
    }
    measures = {f"{m}." + ",".join(map(str, KS)) for m in names.values()} | {"map", "recip_rank"}
    rng = random.Random(7)
    for _ in range(100):
        qrels, run = _random_case(rng)
        ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
        ours = evaluate_run(qrels, run, KS)
        assert set(ref) == set(ours.per_query)
        for q, r in ref.items():
            for fam, name in names.items():
                for k in KS:
                    assert ours.per_query[q][f"{fam}@{k}"] == pytest.approx(r[f"{name}_{k}"], abs=1e-12)
            assert ours.per_query[q]["map"] == pytest.approx(r["map"], abs=1e-12)
            assert ours.per_query[q]["mrr"] == pytest.approx(r["recip_rank"], abs=1e-12)


def test_agrees_with_ir_measures_on_tie_free_runs():
    # ir-measures computes RR@k with the MS MARCO tool (first relevant within k, as MTEB's MRR@k), which
    # orders tied scores its own way; on runs without ties every tool must agree.
    ir = pytest.importorskip("ir_measures")
    fams = {
        "mrr": ir.RR,
        "ndcg": ir.nDCG,
        "map": ir.AP,
        "precision": ir.P,
        "recall": ir.R,
        "hit_rate": ir.Success,
    }
    rng = random.Random(11)
    for _ in range(20):
        qrels, run = _random_case(rng)
        run = {q: {d: rng.random() for d in docs} for q, docs in run.items()}
        ours = evaluate_run(qrels, run, KS)
        measures = [m @ k for m in fams.values() for k in (1, 3, 10)]
        ref = {(r.query_id, str(r.measure)): r.value for r in ir.iter_calc(measures, qrels, run)}
        for q in ours.per_query:
            for fam, m in fams.items():
                for k in (1, 3, 10):
                    assert ours.per_query[q][f"{fam}@{k}"] == pytest.approx(ref[(q, str(m @ k))], abs=1e-12)


def test_bootstrap_and_spearman():
    ci = bootstrap_ci([1.0, 2.0, 3.0, None, float("nan")], resamples=500)
    assert ci["n"] == 3 and ci["mean"] == 2.0 and 1.0 <= ci["lo"] <= 2.0 <= ci["hi"] <= 3.0
    assert bootstrap_ci([]) == {"mean": None, "lo": None, "hi": None, "n": 0}
    assert bootstrap_ci([0.5])["lo"] == 0.5
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
