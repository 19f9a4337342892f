"""Metacognition: how much the system should trust its evidence for a question, as a number in [0, 1].

Before generation the confidence comes from retrieval: the top exemplar similarity, the margin between the
first and second exemplar, and the agreement among the top exemplars (mean cosine of the others to the
first). A logistic over these was fitted on the seed corpus: paraphrased seed questions against questions
on topics the corpus does not cover (`bench/calibrate_confidence.py`); a recalled memory close to the question counts as
evidence too. After generation, when the backend reports per-token or per-byte probabilities, their
geometric mean (and, with entropies, exp(-mean entropy)) is blended in with weight `generator_weight`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Logistic weights fitted on the seed corpus (all-MiniLM-L6-v2, prompts embedded) by
# bench/calibrate_confidence.py; rounded.
BIAS = -6.2
W_TOP = 9.0
W_MARGIN = 2.9
W_AGREE = 4.5
# A recalled memory counts like an exemplar with a typical on-corpus margin and agreement.
MEMORY_MARGIN = 0.2
MEMORY_AGREEMENT = 0.4


@dataclass
class Evidence:
    """Retrieval features for one question."""

    top: float = 0.0  # best exemplar similarity
    margin: float = 0.0  # first minus second exemplar similarity
    agreement: float = 0.0  # mean cosine of exemplars 2..k to the first
    exemplars: int = 0
    memory_top: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Confidence:
    """The estimate and how it was reached."""

    value: float
    retrieval: float
    generator: float | None = None
    low: bool = False
    evidence: Evidence = field(default_factory=Evidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": round(self.value, 4),
            "retrieval": round(self.retrieval, 4),
            "generator": None if self.generator is None else round(self.generator, 4),
            "low": self.low,
            "evidence": self.evidence.to_dict(),
        }


def evidence(
    scores: list[float],
    embeddings: list[np.ndarray] | np.ndarray | None = None,
    memory_scores: list[float] = (),
) -> Evidence:
    """Features from exemplar similarities (best first), their embeddings and the memories' relevances."""
    ev = Evidence(exemplars=len(scores), memory_top=max(memory_scores, default=0.0))
    if scores:
        ev.margin = scores[0] - scores[1] if len(scores) > 1 else scores[0]
    ev.top = max(scores, default=0.0)
    if embeddings is not None and len(embeddings) > 1:
        e = np.asarray(embeddings, dtype=np.float32)
        ev.agreement = float(np.mean(e[1:] @ e[0]))
    return ev


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def retrieval_confidence(ev: Evidence) -> float:
    """The fitted logistic over top similarity, margin and agreement; a closer memory can raise it."""
    exemplars = _sigmoid(BIAS + W_TOP * ev.top + W_MARGIN * ev.margin + W_AGREE * ev.agreement)
    if ev.memory_top <= 0:
        return exemplars
    memory = _sigmoid(BIAS + W_TOP * ev.memory_top + W_MARGIN * MEMORY_MARGIN + W_AGREE * MEMORY_AGREEMENT)
    return max(exemplars, memory)


def generator_confidence(probs: list[float] | None, entropies: list[float] | None = None) -> float | None:
    """Geometric-mean probability of what was generated, averaged with exp(-mean entropy) when given."""
    if not probs:
        return None
    logs = [math.log(min(1.0, max(p, 1e-9))) for p in probs]
    conf = math.exp(sum(logs) / len(logs))
    if entropies:
        conf = 0.5 * conf + 0.5 * math.exp(-sum(entropies) / len(entropies))
    return conf


def assess(ev: Evidence, threshold: float) -> Confidence:
    """Confidence before generation; `low` decides whether the prompt asks the model to admit ignorance."""
    r = retrieval_confidence(ev)
    return Confidence(value=r, retrieval=r, low=r < threshold, evidence=ev)


def update(
    conf: Confidence,
    probs: list[float] | None,
    entropies: list[float] | None,
    threshold: float,
    weight: float = 0.3,
) -> Confidence:
    """Blend in the generator's own probabilities when the backend gave them."""
    g = generator_confidence(probs, entropies)
    value = conf.retrieval if g is None else (1 - weight) * conf.retrieval + weight * g
    return Confidence(
        value=value,
        retrieval=conf.retrieval,
        generator=g,
        low=conf.low or value < threshold,
        evidence=conf.evidence,
    )
