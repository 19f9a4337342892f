"""Metacognition: how much the system should trust its evidence for a question, as a number in [0, 1].

Only sources count as evidence. Before generation the confidence comes from retrieval, read against the store's
own score distribution (`calibration.Reference`): where the best dense cosine lies between the store's typical
off-topic and on-topic top scores, the margin to the second and the agreement among the exemplars on the same
scale, and the share of the question's content words found in the best exemplar. After generation the
generator's own evidence joins: its token (or byte) probabilities and how much of the answer the sources hold
(`calibration.support`). Both stages are logistics (`calibration.Weights`), re-fit per store by
`Shvayambhu.fit_calibration`.

Recalled memories are reported (`memory_top`) but never raise the confidence: the assistant's own earlier words
are not evidence for a fact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from rag.consciousness.calibration import (
    DEFAULT_REFERENCE,
    DEFAULT_WEIGHTS,
    EXTRACT_FEATURES,
    RETRIEVAL_FEATURES,
    Reference,
    Weights,
    auroc,
    content_words,
    fit_logistic,
    logit,
    share,
    sigmoid,
)

CLIP = 3.0  # relative features are clipped to [-CLIP, CLIP]: one odd score must not decide alone
NO_GENERATOR = 0.5  # the generator feature when the backend reports no probabilities


@dataclass
class Evidence:
    """Retrieval features for one question: raw cosines, and the same read against the store's reference."""

    top: float = 0.0  # best exemplar cosine
    margin: float = 0.0  # first minus second exemplar cosine
    agreement: float = 0.0  # mean cosine of exemplars 2..k to the first
    exemplars: int = 0
    lexical: float = 0.0  # share of the question's content words found in the best-matching exemplar
    top_pos: float = 0.0  # `top` between the store's floor (0: an unrelated query) and on-topic median (1)
    margin_pos: float = 0.0  # `margin` over the same spread
    agreement_pos: float = 0.0  # `agreement` above the store's random-pair mean, over the same spread
    memory_top: float = 0.0  # reported only: memories are never evidence

    def features(self) -> list[float]:
        """The retrieval logistic's inputs, in `calibration.RETRIEVAL_FEATURES` order."""
        return [self.top_pos, self.margin_pos, self.agreement_pos, self.lexical]

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Confidence:
    """The estimate and how it was reached; `features` are what the logistics read (re-fit from them)."""

    value: float
    retrieval: float
    generator: float | None = None
    support: float | None = None  # share of the answer the best source holds
    low: bool = False
    evidence: Evidence = field(default_factory=Evidence)
    features: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # why the layer held it low, where it did ("" : the estimate alone)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": round(self.value, 4),
            "retrieval": round(self.retrieval, 4),
            "generator": None if self.generator is None else round(self.generator, 4),
            "support": None if self.support is None else round(self.support, 4),
            "low": self.low,
            "reason": self.reason,
            "evidence": self.evidence.to_dict(),
            "features": {k: round(v, 4) for k, v in self.features.items()},
        }


def _clip(x: float) -> float:
    return max(-CLIP, min(CLIP, x))


def evidence(
    scores: list[float],
    embeddings: list[np.ndarray] | np.ndarray | None = None,
    memory_scores: list[float] = (),
    *,
    question: str = "",
    texts: list[str] = (),
    reference: Reference | None = None,
) -> Evidence:
    """Features from exemplar cosines (in retrieval order), their embeddings and texts, read against the store's
    `reference` (a default for all-MiniLM-L6-v2 when None); `memory_scores` are only reported."""
    ref = reference or DEFAULT_REFERENCE
    ev = Evidence(exemplars=len(scores), memory_top=max(memory_scores, default=0.0))
    if not scores:
        ev.top_pos = _clip(ref.position(0.0))
        ev.agreement_pos = 0.0
        return ev
    ranked = sorted(scores, reverse=True)
    ev.top = ranked[0]
    ev.margin = ranked[0] - (ranked[1] if len(ranked) > 1 else ref.floor)  # alone: above an unrelated query's
    ev.agreement = ref.pair_mean
    if embeddings is not None and len(embeddings) > 1:
        e = np.asarray(embeddings, dtype=np.float32)
        first = int(np.argmax(np.asarray(scores[: len(e)])))
        others = np.delete(e, first, axis=0)
        ev.agreement = float(np.mean(others @ e[first]))
    words = content_words(question)
    ev.lexical = max((share(words, t) for t in texts), default=0.0)
    ev.top_pos = _clip(ref.position(ev.top))
    ev.margin_pos = _clip(ev.margin / ref.spread)
    ev.agreement_pos = _clip((ev.agreement - ref.pair_mean) / ref.spread)
    return ev


def retrieval_confidence(ev: Evidence, weights: Weights | None = None) -> float:
    """The retrieval logistic over the evidence's relative features."""
    return sigmoid(logit((weights or DEFAULT_WEIGHTS).retrieval, ev.features()))


def generator_confidence(probs: list[float] | None, entropies: list[float] | None = None) -> float | None:
    """Geometric-mean probability of what was generated, averaged with exp(-mean entropy) when given."""
    if not probs:
        return None
    logs = [math.log(min(1.0, max(p, 1e-9))) for p in probs]
    conf = math.exp(sum(logs) / len(logs))
    if entropies:
        conf = 0.5 * conf + 0.5 * math.exp(-sum(entropies) / len(entropies))
    return conf


def assess(ev: Evidence, threshold: float, weights: Weights | None = None) -> Confidence:
    """Confidence before generation; `low` decides whether the prompt asks the model to admit ignorance (and
    whether a backend that only re-tells abstains)."""
    w = weights or DEFAULT_WEIGHTS
    z = logit(w.retrieval, ev.features())
    r = sigmoid(z)
    features = dict(zip(RETRIEVAL_FEATURES, ev.features(), strict=True))
    features["retrieval_logit"] = z
    return Confidence(value=r, retrieval=r, low=r < threshold, evidence=ev, features=features)


def answer_features(conf: Confidence) -> list[float]:
    """The final logistic's inputs, in `calibration.ANSWER_FEATURES` order."""
    f = conf.features
    g = f.get("generator", NO_GENERATOR)
    return [f.get("retrieval_logit", 0.0), g, f.get("support", 0.0)]


def extract_features(conf: Confidence) -> list[float]:
    """An extractive answer's logistic inputs, in `calibration.EXTRACT_FEATURES` order."""
    f = conf.features
    return [f.get(k, 0.0) for k in EXTRACT_FEATURES]


def update(
    conf: Confidence,
    probs: list[float] | None,
    entropies: list[float] | None,
    threshold: float,
    *,
    support: float | None = None,
    weights: Weights | None = None,
    extract: tuple[float, float, float] | None = None,
) -> Confidence:
    """The final confidence: the retrieval evidence with the generator's own probabilities and the answer's
    support in its sources. With neither (an abstention) it stays the retrieval confidence. An extractive answer
    (taken from a passage, no model call) gives `extract` = (its phrase's fit to the question, how strongly its
    sentence was chosen, whether its unit measures what was asked) and is scored by its own logistic
    (`Weights.extract`)."""
    w = weights or DEFAULT_WEIGHTS
    g = generator_confidence(probs, entropies)
    features = dict(conf.features)
    features["generator"] = NO_GENERATOR if g is None else g
    features["support"] = 0.0 if support is None else support
    out = Confidence(
        value=conf.retrieval,
        retrieval=conf.retrieval,
        generator=g,
        support=support,
        evidence=conf.evidence,
        features=features,
    )
    if extract is not None:
        features["fit"], features["match"], features["agree"] = extract
        out.value = sigmoid(logit(w.extract, extract_features(out)))
    elif g is not None or support is not None:
        out.value = sigmoid(logit(w.answer, answer_features(out)))
    out.low = out.value < threshold
    return out


UNSTATED = 0.9  # a doubted answer's confidence is at most this share of the low-confidence threshold


def doubted(conf: Confidence, threshold: float) -> Confidence:
    """`conf` held below `threshold` (so flagged low): the layer found no phrase of the kind the question asks for
    in its passages ("How many kayaks does Northwind own?" over a note that never says), so what the model writes
    from them re-tells a passage, it does not answer."""
    why = "the documents found do not state this"
    return replace(conf, value=min(conf.value, UNSTATED * threshold), low=True, reason=why)


def fit(
    confidences: list[Confidence],
    correct: list[bool],
    abstained: list[bool],
    old: Weights | None = None,
    *,
    refit_retrieval: bool = True,
) -> tuple[Weights, dict[str, Any]]:
    """Re-fit the logistics on answers' confidence features and whether each answer was right: the retrieval one
    on all (kept with `refit_retrieval=False`), the generated answers' one on those generated, the extractive
    answers' one on those extracted (each only with 10 or more of them, right and wrong; else it is kept). An
    abstention's confidence is its retrieval one. Returns the weights and a summary: n, how many were right, AUROC
    before and after (in sample)."""
    old = old or DEFAULT_WEIGHTS
    x = [[c.features.get(f, 0.0) for f in RETRIEVAL_FEATURES] for c in confidences]
    retrieval = fit_logistic(np.array(x), np.array(correct, dtype=float)) if refit_retrieval else list(old.retrieval)
    extracted = ["fit" in c.features for c in confidences]

    def refit(kept: list[float], rows: list[int]) -> list[float]:
        if len(rows) < 10 or len({correct[i] for i in rows}) < 2:
            return list(kept)
        xs = np.array([_answer_x(confidences[i], retrieval) for i in rows])
        return fit_logistic(xs, np.array([correct[i] for i in rows], dtype=float))

    answered = [i for i in range(len(x)) if not abstained[i]]
    answer = refit(old.answer, [i for i in answered if not extracted[i]])
    extract = refit(old.extract, [i for i in answered if extracted[i]])

    def scores(w: Weights) -> list[float]:
        return [rescore(c, ab, w) for c, ab in zip(confidences, abstained, strict=True)]

    new = Weights(retrieval=retrieval, answer=answer, extract=extract)
    summary = {
        "n": len(x),
        "correct": int(sum(correct)),
        "extracted": int(sum(extracted)),
        "auroc_before": auroc(scores(old), correct),
        "auroc_after": auroc(scores(new), correct),
    }
    new.fitted = dict(summary)
    return new, summary


def _retrieval_z(conf: Confidence, retrieval: list[float]) -> float:
    """The retrieval logit of an answer's evidence under `retrieval` weights."""
    return logit(retrieval, [conf.features.get(k, 0.0) for k in RETRIEVAL_FEATURES])


def _answer_x(conf: Confidence, retrieval: list[float]) -> list[float]:
    """An answer's inputs to its final logistic, with the retrieval logit under `retrieval` weights."""
    f = conf.features
    z = _retrieval_z(conf, retrieval)
    if "fit" in f:  # extracted from a passage
        return [z, *(f.get(k, 0.0) for k in EXTRACT_FEATURES[1:])]
    return [z, f.get("generator", NO_GENERATOR), f.get("support", 0.0)]


def rescore(conf: Confidence, abstained: bool, w: Weights) -> float:
    """The final confidence `update` would have given this answer under weights `w`: an abstention keeps its
    retrieval confidence, an extracted answer goes through `w.extract`, a generated one through `w.answer`."""
    if abstained:
        return sigmoid(_retrieval_z(conf, w.retrieval))
    return sigmoid(logit(w.extract if "fit" in conf.features else w.answer, _answer_x(conf, w.retrieval)))


def cross_validated(
    confidences: list[Confidence], correct: list[bool], abstained: list[bool], *, folds: int = 5, repeats: int = 5
) -> list[float]:
    """Each answer's confidence from weights fitted (`fit`) on the other folds, averaged over seeded repeats: how
    the answer logistics fitted on some questions (as the shipped ones were, on the development set) do on
    questions they were not fitted on, the honest figure beside the in-sample one. The retrieval logistic stays
    as given (the shipped one was fitted on another corpus)."""
    n = len(confidences)
    if n < 2 * folds:
        raise ValueError(f"cross-validation needs at least {2 * folds} answers, got {n}")
    rng = np.random.default_rng(0)
    total = np.zeros(n)
    for _ in range(repeats):
        for test in np.array_split(rng.permutation(n), folds):
            train = sorted(set(range(n)) - set(test.tolist()))
            pick = [confidences[i] for i in train]
            w, _ = fit(pick, [correct[i] for i in train], [abstained[i] for i in train], refit_retrieval=False)
            for i in test:
                total[i] += rescore(confidences[i], abstained[i], w)
    return (total / repeats).tolist()
