"""Fusing ranked lists: reciprocal rank fusion (Cormack et al., 2009) and a min-max normalised convex combination."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from index.errors import UsageError

FUSIONS = ("rrf", "convex")
DEFAULT_RRF_K = 60


@dataclass(frozen=True)
class FusionOptions:
    """How dense and lexical lists are combined: `rrf` (constant `rrf_k`) or `convex` (weight `alpha` on dense)."""

    method: str = "rrf"
    rrf_k: float = DEFAULT_RRF_K
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise UsageError(f"fusion must be one of {', '.join(FUSIONS)}, not {self.method!r}")
        if self.rrf_k < 0:
            raise UsageError(f"the RRF constant k must be >= 0, not {self.rrf_k}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"the convex weight alpha must be within [0, 1], not {self.alpha}")


def _ordered(scores: dict[str, float], best_rank: dict[str, int]) -> list[tuple[str, float]]:
    """Highest score first; ties go to the better rank in any list, then to the id, so the order is stable."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], best_rank[kv[0]], kv[0]))


def _best_ranks(rankings: Sequence[Sequence[str]]) -> dict[str, int]:
    best: dict[str, int] = {}
    for ranking in rankings:
        for r, id_ in enumerate(ranking):
            best[id_] = min(best.get(id_, r), r)
    return best


def rrf(rankings: Sequence[Sequence[str]], k: float = DEFAULT_RRF_K) -> list[tuple[str, float]]:
    """Sum of 1 / (k + rank) over the lists that hold an id (rank from 1); best first."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for r, id_ in enumerate(ranking, start=1):
            scores[id_] = scores.get(id_, 0.0) + 1.0 / (k + r)
    return _ordered(scores, _best_ranks(rankings))


def minmax(scores: dict[str, float]) -> dict[str, float]:
    """Scores mapped onto [0, 1]; a list whose scores are all equal maps to 1 (each is the best it has)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return dict.fromkeys(scores, 1.0)
    return {i: (s - lo) / (hi - lo) for i, s in scores.items()}


def convex(dense: dict[str, float], lexical: dict[str, float], alpha: float = 0.5) -> list[tuple[str, float]]:
    """alpha * norm(dense) + (1 - alpha) * norm(lexical); an id missing from a list scores 0 there."""
    d, lx = minmax(dense), minmax(lexical)
    ids = list(dict.fromkeys([*dense, *lexical]))
    scores = {i: alpha * d.get(i, 0.0) + (1 - alpha) * lx.get(i, 0.0) for i in ids}
    rank_lists = [sorted(dense, key=lambda i: -dense[i]), sorted(lexical, key=lambda i: -lexical[i])]
    return _ordered(scores, _best_ranks(rank_lists))


def fuse(
    dense: list[tuple[str, float]], lexical: list[tuple[str, float]], opts: FusionOptions
) -> list[tuple[str, float]]:
    """Fuse two (id, score) lists, each best first, with the chosen method."""
    if opts.method == "rrf":
        return rrf([[i for i, _ in dense], [i for i, _ in lexical]], opts.rrf_k)
    return convex(dict(dense), dict(lexical), opts.alpha)
