"""Ranking metrics as trec_eval computes them (so pytrec_eval, MTEB and BEIR), and bootstrap intervals.

- A run is ordered by score descending, ties broken by document id descending (trec_eval's rule).
- A document is relevant when its qrels grade is >= 1; nDCG uses the grade itself as the gain (linear, as
  trec_eval), grades <= 0 gain nothing, and the ideal ranking is built from all judged documents.
- Metrics average over the queries that are both in the qrels and in the run; a query whose judgements are
  all 0 is evaluated (and scores 0), as pytrec_eval and MTEB do. MAP@k is trec_eval's map_cut, MRR@k is
  MTEB's (reciprocal rank of the first relevant document within the top k), hit rate@k is trec_eval's success.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10, 100)
FAMILIES = ("ndcg", "mrr", "recall", "precision", "map", "hit_rate")


def parse_ks(text: str | Iterable[int]) -> tuple[int, ...]:
    """`"1,3,10"` (or integers) -> sorted unique positive cutoffs; a bad value raises ValueError."""
    items = [s.strip() for s in text.split(",") if s.strip()] if isinstance(text, str) else list(text)
    try:
        ks = sorted({int(x) for x in items})
    except (TypeError, ValueError) as e:
        raise ValueError(f"cutoffs must be positive integers separated by commas, got {text!r}") from e
    if not ks or ks[0] < 1:
        raise ValueError(f"cutoffs must be positive integers separated by commas, got {text!r}")
    return tuple(ks)


def ranking(scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval order: score descending, equal scores by document id descending."""
    for doc, s in scores.items():
        if not isinstance(s, (int, float)) or math.isnan(s):
            raise ValueError(f"score of document {doc!r} is not a number: {s!r}")
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def query_metrics(
    rels: Mapping[str, int], scores: Mapping[str, float], ks: Sequence[int] = DEFAULT_KS, level: int = 1
) -> dict[str, float]:
    """Every metric of one query: `<family>@k` for each k, plus uncut `map` and `mrr` over the whole run."""
    order = ranking(scores)
    grades = [rels.get(d, 0) for d in order]
    hit = [g >= level for g in grades]
    num_rel = sum(1 for g in rels.values() if g >= level)
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)

    first = next((i + 1 for i, h in enumerate(hit) if h), None)
    ap_terms, found = [], 0
    for i, h in enumerate(hit):
        if h:
            found += 1
            ap_terms.append((i + 1, found / (i + 1)))
    out: dict[str, float] = {
        "map": sum(p for _, p in ap_terms) / num_rel if num_rel else 0.0,
        "mrr": 1.0 / first if first else 0.0,
    }
    for k in ks:
        found_k = sum(hit[:k])
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades[:k]) if g > 0)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"mrr@{k}"] = 1.0 / first if first and first <= k else 0.0
        out[f"recall@{k}"] = found_k / num_rel if num_rel else 0.0
        out[f"precision@{k}"] = found_k / k
        out[f"map@{k}"] = sum(p for r, p in ap_terms if r <= k) / num_rel if num_rel else 0.0
        out[f"hit_rate@{k}"] = 1.0 if found_k else 0.0
    return out


def metric_names(ks: Sequence[int]) -> list[str]:
    """Names in report order: each family at each k, then uncut MAP and MRR."""
    return [f"{f}@{k}" for f in FAMILIES for k in ks] + ["map", "mrr"]


@dataclass
class Evaluation:
    """Mean metrics over the evaluated queries, and each query's own."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    without_positives: int = 0  # evaluated queries with no judgement >= 1 (they score 0 everywhere)

    @property
    def queries(self) -> int:
        return len(self.per_query)


def evaluate_run(qrels: Qrels, run: Run, ks: Sequence[int] = DEFAULT_KS, level: int = 1) -> Evaluation:
    """Evaluate a run against qrels over the queries present in both (pytrec_eval's rule)."""
    ks = parse_ks(ks)
    per_query = {q: query_metrics(qrels[q], run[q], ks, level) for q in run if q in qrels}
    names = metric_names(ks)
    n = len(per_query)
    mean = {m: (sum(v[m] for v in per_query.values()) / n if n else 0.0) for m in names}
    without = sum(1 for q in per_query if not any(g >= level for g in qrels[q].values()))
    return Evaluation(mean=mean, per_query=per_query, without_positives=without)


def write_trec_run(path: str, run: Run, tag: str = "shvayambhu") -> None:
    """A TREC run file (`qid Q0 docid rank score tag`), each query in trec_eval order."""
    with open(path, "w", encoding="utf-8") as f:
        for q in sorted(run):
            for rank, d in enumerate(ranking(run[q]), start=1):
                f.write(f"{q} Q0 {d} {rank} {run[q][d]!r} {tag}\n")


def bootstrap_ci(
    values: Iterable[float | None], *, resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float | int | None]:
    """Mean and a percentile-bootstrap (1 - alpha) interval of the mean; None and NaN values are left out."""
    xs = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if xs.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(xs.mean())
    if xs.size == 1:
        return {"mean": mean, "lo": mean, "hi": mean, "n": 1}
    rng = np.random.default_rng(seed)
    means = xs[rng.integers(0, xs.size, size=(resamples, xs.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": int(xs.size)}


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties get average ranks); None when undefined (under 3 pairs, a constant)."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(len(a), dtype=np.float64)
    for v in np.unique(a):  # average the ranks of ties
        idx = a == v
        ranks[idx] = ranks[idx].mean()
    return ranks
