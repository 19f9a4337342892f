"""Answer metrics: SQuAD-normalised exact match and token F1, abstention, faithfulness, and calibration
(AUROC, expected calibration error, risk-coverage).

Normalisation is the official SQuAD script's: lower case, punctuation removed, the articles a/an/the removed,
whitespace collapsed. F1 and EM take the best gold answer; a question without gold answers scores None.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)

# Phrases with which an answer declines: "I don't know", "it is not in the documents", the BLT's abstention.
_ABSTAIN = re.compile(
    r"\bi (?:do not|don't|dont) know\b"
    r"|\bi(?: am|'m) not sure\b"
    r"|\b(?:i|we) (?:cannot|can't|could not|couldn't|can not) (?:find|answer|tell|say|determine|locate)\b"
    r"|\bunable to (?:find|answer|determine)\b"
    r"|\bno (?:relevant )?information (?:about|on|regarding|in|is)\b"
    r"|\b(?:is|are|was|were) not (?:mentioned|stated|specified|given|provided|covered|included|found)"
    r"|\bnot (?:mentioned|stated|specified|given|provided|covered|found) in the\b"
    r"|\b(?:not|nothing) in (?:the|my|your) (?:provided |given |retrieved )?"
    r"(?:documents?|context|corpus|sources?|passages?|notes|references?|text|exemplars?)\b"
    r"|\b(?:documents?|context|corpus|sources?|passages?|notes|references?|text|exemplars?) "
    r"(?:does|do|did) not (?:contain|mention|say|include|provide|state|specify|cover|answer)\b"
    r"|\bhas nothing on\b|\bthere is no (?:mention|information|record)\b"
)


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    """The normalised tokens of `text`."""
    return normalize(text).split()


def exact_match(prediction: str, golds: Sequence[str]) -> float | None:
    """1.0 when the normalised prediction equals a normalised gold answer; None without gold answers."""
    if not golds:
        return None
    p = normalize(prediction)
    return float(any(p == normalize(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float | None:
    """The best token-overlap F1 over the gold answers (SQuAD's); None without gold answers."""
    if not golds:
        return None
    pred = tokens(prediction)
    best = 0.0
    for g in golds:
        gold = tokens(g)
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_gold(text: str, golds: Sequence[str]) -> float | None:
    """1.0 when a normalised gold answer occurs in the normalised text (as whole tokens); None without golds."""
    if not golds:
        return None
    t = f" {normalize(text)} "
    return float(any(normalize(g) and f" {normalize(g)} " in t for g in golds))


def says_it_does_not_know(text: str) -> bool:
    """True when the text declines: it does not know, or the answer is not in the documents."""
    t = " ".join(text.lower().replace("\u2019", "'").split())
    return bool(_ABSTAIN.search(t)) or not t


def abstained(text: str, low_confidence: bool = False, done_reason: str = "stop") -> bool:
    """An answer abstains when the layer flagged it low-confidence, the backend abstained, or the text declines."""
    return bool(low_confidence) or done_reason == "abstain" or says_it_does_not_know(text)


def faithfulness(text: str, sources: Sequence[str]) -> float | None:
    """Share of the answer's normalised tokens that occur in the sources; None for an empty answer or no sources."""
    words = tokens(text)
    if not words or not sources:
        return None
    vocab = {w for s in sources for w in tokens(s)}
    return sum(w in vocab for w in words) / len(words)


def citation_precision(sources: Sequence[str], golds: Sequence[str]) -> float | None:
    """Share of cited sources that hold a gold answer; None without sources or golds."""
    if not sources or not golds:
        return None
    return sum(bool(contains_gold(s, golds)) for s in sources) / len(sources)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `scores` for `labels` (ties count half); None unless both classes occur."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def ece(scores: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float | None:
    """Expected calibration error: over `bins` equal-width confidence bins, the share-weighted gap between mean
    confidence and accuracy (a confidence of 1.0 falls in the last bin); None for no pairs."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64)
    if s.size == 0:
        return None
    idx = np.minimum((s * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / s.size * abs(s[m].mean() - y[m].mean())
    return float(total)


def wrong_when_confident(scores: Sequence[float], labels: Sequence[bool], threshold: float = 0.8) -> float | None:
    """Share wrong among the answers whose confidence is at least `threshold`; None when there are none."""
    picked = [not ok for s, ok in zip(scores, labels, strict=True) if s >= threshold]
    return sum(picked) / len(picked) if picked else None


def risk_coverage(scores: Sequence[float], labels: Sequence[bool]) -> tuple[list[float], list[float]]:
    """(coverage, risk): answering only the i most confident questions, the share answered and the share of
    those that are wrong, for i = 1..n (ties broken by input order)."""
    n = len(scores)
    if n == 0:
        return [], []
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    wrong = np.cumsum([not labels[i] for i in order])
    counts = np.arange(1, n + 1)
    return (counts / n).tolist(), (wrong / counts).tolist()


def aurc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the risk-coverage curve (mean risk over the coverages; lower is better); None for no pairs."""
    _, risk = risk_coverage(scores, labels)
    return float(np.mean(risk)) if risk else None


def bootstrap_stat(
    items: Sequence[Any],
    stat: Callable[[Sequence[Any]], float | None],
    *,
    resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """`stat` over `items` and a percentile-bootstrap (1 - alpha) interval from resampling the items (resamples
    where `stat` is undefined are left out)."""
    value = stat(items) if items else None
    if value is None:
        return {"mean": None, "lo": None, "hi": None, "n": len(items)}
    rng = np.random.default_rng(seed)
    n = len(items)
    vals = []
    for _ in range(resamples):
        v = stat([items[i] for i in rng.integers(0, n, size=n)])
        if v is not None:
            vals.append(v)
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2]) if vals else (value, value)
    return {"mean": float(value), "lo": float(lo), "hi": float(hi), "n": n}
