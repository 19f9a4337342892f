"""Metacognition: how much the system should trust its evidence for a question, as a number in [0, 1].

Before generation the confidence comes from retrieval: the top exemplar similarity, the margin between the
first and second exemplar, and the agreement among the top exemplars (mean cosine of the others to the
first). A logistic over these was fitted on the seed corpus: paraphrased seed questions against questions
on topics the corpus does not cover (`calibrate`); a recalled memory close to the question counts as
evidence too. After generation, when the backend reports per-token or per-byte probabilities, their
geometric mean (and, with entropies, exp(-mean entropy)) is blended in with weight `generator_weight`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Logistic weights fitted by `calibrate` on the seed corpus (all-MiniLM-L6-v2, prompts embedded); rounded.
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


# ---------------------------------------------------------------------------------------------------------
# Calibration


ON_CORPUS = (
    "Why does the sky look blue?",
    "What makes sunsets red?",
    "How do black holes form and what are they?",
    "How long is a light year?",
    "How does carbon dating work?",
    "How do I get to sleep more quickly?",
    "What's the right length for a power nap?",
    "How big should my emergency savings be?",
    "Is the Pomodoro method effective?",
    "How should a beginner start working out?",
    "How can I spot a phishing email?",
    "What does an API do, in simple words?",
    "What is overfitting?",
    "What's the trolley problem about?",
    "What are the problems with utilitarianism?",
    "Is it OK to use AI to write my essays?",
    "affect vs effect: which one is which?",
    "Should I use a serial comma?",
    "How does memory work in the brain?",
    "Why do people forget things?",
    "Does sleeping help memory?",
    "Explain the Monty Hall problem.",
    "What is confirmation bias?",
    "What's the answer to the bat and ball puzzle?",
    "How do I deal with grief?",
    "How can I support a depressed friend?",
    "Empathy versus sympathy: what's the difference?",
    "How do I calm down when angry?",
    "Are you able to browse the web?",
    "Do you have emotions?",
    "What is retrieval augmented generation?",
    "How does the internet work?",
    "Why does having many tabs open slow my computer?",
    "How does photosynthesis work?",
    "Why do volcanoes erupt?",
    "How do I overcome writer's block?",
    "What is a villanelle poem?",
)
OFF_CORPUS = (
    "What is the torque spec for the cylinder head bolts on a 2004 Honda Civic?",
    "Who won the 1986 FIFA World Cup final and what was the score?",
    "What's the current exchange rate of the Thai baht to the euro?",
    "How many calories are in a McDonald's Big Mac?",
    "What is the population of Ulaanbaatar?",
    "How do I configure BGP route reflectors on a Juniper router?",
    "Give me the lyrics to Bohemian Rhapsody.",
    "What is the melting point of tungsten carbide?",
    "Which cricket team won the 2011 World Cup?",
    "How do I file a VAT return in Portugal?",
    "What is the chemical formula of ibuprofen?",
    "What time does the Louvre close on Fridays?",
    "How do I remove a stripped screw from a bicycle disc brake rotor?",
    "What were the main causes of the War of the Spanish Succession?",
    "Translate 'the cat sleeps on the mat' into Swahili.",
    "What's the best bait for catching catfish in the Mississippi river?",
    "How do I compile the Linux kernel with a custom config?",
    "Who was the third Mughal emperor?",
    "What is the dosage of amoxicillin for a 20 kg child?",
    "How tall is Mount Kilimanjaro?",
    "What is the recipe for authentic Hungarian goulash?",
    "What's the plot of the opera Tosca?",
    "Which stocks are in the Nikkei 225?",
    "How do I replace the water pump on a Volvo XC90?",
    "What is the capital of Burkina Faso?",
    "Explain bidding conventions in contract bridge.",
    "What's the zoning law for accessory dwelling units in Austin, Texas?",
    "How do I knit a cable stitch?",
)


def fit(features: np.ndarray, labels: np.ndarray, l2: float = 0.001, steps: int = 20000) -> np.ndarray:
    """Logistic regression by gradient descent: returns [bias, w_top, w_margin, w_agree]."""
    x = np.hstack([np.ones((len(features), 1)), features])
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - labels) / len(labels) + l2 * np.r_[0.0, w[1:]]
        w -= 1.0 * grad
    return w


def calibrate(collection: Any, embedder: Any, k: int = 4) -> dict[str, Any]:
    """Features of ON_CORPUS and OFF_CORPUS questions against `collection`, the fitted weights, and the
    confidences the shipped weights give (mean on, mean off, and the worst pair)."""
    from index.retrieve import query_vector

    rows, labels, confs = [], [], {"on": [], "off": []}
    for label, questions in (("on", ON_CORPUS), ("off", OFF_CORPUS)):
        vecs = embedder.embed(list(questions))
        for v in vecs:
            hits = query_vector(collection, v, k=k, mmr=True, fetch_k=k, mmr_lambda=1.0)
            ev = evidence([h.score for h in hits], [h.embedding for h in hits])
            rows.append([ev.top, ev.margin, ev.agreement])
            labels.append(1.0 if label == "on" else 0.0)
            confs[label].append(retrieval_confidence(ev))
    w = fit(np.array(rows), np.array(labels))
    return {
        "fitted": {"bias": float(w[0]), "top": float(w[1]), "margin": float(w[2]), "agreement": float(w[3])},
        "on_mean": float(np.mean(confs["on"])),
        "off_mean": float(np.mean(confs["off"])),
        "on_min": float(np.min(confs["on"])),
        "off_max": float(np.max(confs["off"])),
    }


if __name__ == "__main__":  # python -m rag.metacognition [DATA_DIR]: refit against an ingested seed corpus
    import json
    import sys

    from rag.api import Shvayambhu

    a = Shvayambhu(store={"data_dir": sys.argv[1]} if len(sys.argv) > 1 else {})
    print(json.dumps(calibrate(a.collection(), a.embedder), indent=2))
