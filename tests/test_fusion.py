"""Fusion on hand-made rankings: reciprocal rank fusion and the normalised convex combination, ties included."""

from __future__ import annotations

import pytest

from index.errors import UsageError
from index.fusion import FusionOptions, convex, fuse, minmax, rrf


def test_rrf_sums_reciprocal_ranks():
    out = dict(rrf([["a", "b", "c"], ["c", "a", "d"]], k=60))
    assert out["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert out["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert out["d"] == pytest.approx(1 / 63)
    assert [i for i, _ in rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)] == ["a", "c", "b", "d"]


def test_rrf_k_changes_how_much_the_top_dominates():
    lists = [["a", "x", "y", "b"], ["b", "z", "w", "a"]]
    # a and b tie on every k (mirror images); the tie goes to the better single rank, then to the id
    assert [i for i, _ in rrf(lists, k=0)][:2] == ["a", "b"]
    one_sided = [["a", "b"], ["c", "d", "e", "b"]]
    assert [i for i, _ in rrf(one_sided, k=0)][0] == "a"  # rank 1 alone beats ranks 2 + 4 when k is small
    assert [i for i, _ in rrf(one_sided, k=1000)][0] == "b"  # with a large k, being in both lists wins


def test_rrf_ties_are_broken_by_best_rank_then_id():
    out = rrf([["b", "a"], ["a", "b"]], k=60)
    assert out[0][1] == out[1][1] and [i for i, _ in out] == ["a", "b"]
    out = rrf([["z"], ["y"]], k=60)
    assert [i for i, _ in out] == ["y", "z"]


def test_minmax_and_constant_lists():
    assert minmax({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax({"a": 5.0, "b": 5.0}) == {"a": 1.0, "b": 1.0}
    assert minmax({}) == {}


def test_convex_weights_normalised_scores():
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}
    lexical = {"c": 12.0, "d": 2.0}
    out = dict(convex(dense, lexical, alpha=0.5))
    assert out == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.0})
    assert [i for i, _ in convex(dense, lexical, alpha=1.0)][0] == "a"
    assert [i for i, _ in convex(dense, lexical, alpha=0.0)][0] == "c"
    # a and c tie at 0.5: c is first in one list, a is first in the other, so the id decides
    assert [i for i, _ in convex(dense, lexical, alpha=0.5)][:2] == ["a", "c"]


def test_fuse_dispatches_and_validates():
    dense, lexical = [("a", 0.9), ("b", 0.8)], [("b", 3.0), ("c", 1.0)]
    assert [i for i, _ in fuse(dense, lexical, FusionOptions())][0] == "b"
    assert [i for i, _ in fuse(dense, lexical, FusionOptions("convex", alpha=0.9))][0] == "a"
    for bad in ({"method": "max"}, {"rrf_k": -1}, {"alpha": 1.5}):
        with pytest.raises(UsageError):
            FusionOptions(**bad)
