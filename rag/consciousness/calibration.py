"""Calibration of the confidence against the store it runs on, and the lexical evidence it reads.

Raw cosines do not carry across embedding models, precisions (int8/fp32) or corpus sizes, so a query's scores
are read against the store's own score distribution (its `Reference`): up to `SAMPLE` records are drawn, a
question-sized window of each record's embedded text is embedded as a query, and two distributions are
recorded: its cosine to its own record (the "on-topic" score a query about something the store holds gets)
and its cosines to the other records, whose mean and spread give the top score an unrelated query typically
gets in a store of this size (the "floor": the expected best of `count` such draws). A top score is then its
position between the floor (0) and the on-topic median (1).

The logistic weights over these features (`Weights`) ship with defaults fitted by bench/calibrate_confidence.py
on data we wrote; `fit` re-fits them on answers known to be right or wrong, and they are saved per collection
beside the store (`save`, `load`).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE = 200  # records sampled for the reference
WINDOW_WORDS = 12  # a query is at most this many words of a record's text (questions are short)
REFRESH_SHARE = 0.2  # the reference is rebuilt when the collection's count has changed by more than this share
SUPPORTED = 0.6  # share of an answer's content words a source must hold to support it ("grounded")
VERSION = 1

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from into onto about as is are was were be been
    being am do does did doing have has had having i me my we our you your he him his she her it its they them
    their this that these those what which who whom whose when where why how there here not no nor can could
    would should will shall may might must just than too very also any some all each every both either neither
    one more most other such only own same up down out over under again further once s t d ll m o re ve y""".split()
)


def content_words(text: str, width: int = 6) -> set[str]:
    """Lower-cased words of `text` that carry content (no stopwords), lightly stemmed: a plural or past-tense
    ending dropped, then the first `width` letters ("opened" and "open", "collected" and "collection" meet)."""
    words = (t.lower() for t in _WORD.findall(text))
    return {stem(w)[:width] for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


def stem(word: str) -> str:
    """A plural or past-tense ending dropped (a light stemmer for matching words across texts)."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def share(words: set[str], text: str) -> float:
    """Share of `words` (from `content_words`) that occur in `text`; 0 when there are none."""
    if not words:
        return 0.0
    return len(words & content_words(text)) / len(words)


def support(answer: str, source: str) -> float:
    """How far `source` supports `answer`: 1 when the whole answer occurs in it, else the share of the answer's
    content words it holds (0 for an answer without content words)."""
    a = " ".join(_WORD.findall(answer.lower()))
    if a and a in " ".join(_WORD.findall(source.lower())):
        return 1.0
    return share(content_words(answer), source)


# ---------------------------------------------------------------------------------------------------------
# The store's reference


@dataclass
class Reference:
    """One store's score distribution: quantiles (10, 25, 50, 75, 90) of on-topic scores (a window of a record
    against that record) and of nearest-other-record scores; the mean and spread of a window's cosine to the
    other records (`query_mean`, `query_std`) and of record pairs (`pair_mean`); `count`, the collection size."""

    on: list[float]
    off: list[float]
    pair_mean: float
    query_mean: float = 0.0
    query_std: float = 0.1
    count: int = 0
    sampled: int = 0
    model: str = ""
    precision: str = ""

    @property
    def floor(self) -> float:
        """The top score an unrelated query typically gets here: the expected best of `count` draws from the
        query-to-record score distribution (so it rises with the store's size and its cosine scale)."""
        n = max(self.count, 2)
        r = math.sqrt(2 * math.log(n))
        z = r - (math.log(math.log(n)) + math.log(4 * math.pi)) / (2 * r) if n > 2 else 0.5
        return self.query_mean + max(z, 0.5) * self.query_std

    @property
    def spread(self) -> float:
        """The on-topic median minus the floor (never below 0.05, so that positions stay finite)."""
        return max(0.05, self.on[2] - self.floor)

    def position(self, score: float) -> float:
        """Where a top score lies: 0 at the floor, 1 at the on-topic median."""
        return (score - self.floor) / self.spread

    def stale(self, count: int) -> bool:
        """Whether the collection has changed too much since this was measured."""
        return abs(count - self.count) > max(1.0, REFRESH_SHARE * self.count)

    def to_dict(self) -> dict[str, Any]:
        d = {k: ([round(x, 5) for x in v] if isinstance(v, list) else v) for k, v in asdict(self).items()}
        d["floor"] = round(self.floor, 5)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reference:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# all-MiniLM-L6-v2 on the seed corpus (fp32); used where no store is at hand (no corpus yet, bare pipelines).
DEFAULT_REFERENCE = Reference(
    on=[0.509, 0.675, 0.793, 0.87, 0.919],
    off=[0.437, 0.517, 0.661, 0.753, 0.829],
    pair_mean=0.057,
    query_mean=0.056,
    query_std=0.089,
    count=880,
)

QUANTILES = (10, 25, 50, 75, 90)


def _window(text: str, rng: random.Random) -> str:
    words = text.split()
    n = len(words)
    w = max(3, min(WINDOW_WORDS, round(0.6 * n)))
    if n <= w:
        return " ".join(words)
    start = rng.randrange(0, n - w + 1)
    return " ".join(words[start : start + w])


def build_reference(
    collection: Any, embed: Callable[[list[str]], np.ndarray], sample: int = SAMPLE, seed: int = 0
) -> Reference | None:
    """Measure a collection's reference (see the module docstring); None when it holds fewer than 2 records."""
    ids = collection.get(include=[])["ids"]
    if len(ids) < 2:
        return None
    rng = random.Random(seed)
    picked = sorted(rng.sample(ids, min(sample, len(ids))))
    got = collection.get(ids=picked, include=["documents", "embeddings"])
    rows = [(i, d, e) for i, d, e in zip(got["ids"], got["documents"], got["embeddings"], strict=True) if d]
    if len(rows) < 2:
        return None
    queries = np.asarray(embed([_window(d, rng) for _, d, _ in rows]), dtype=np.float32)
    vectors = np.asarray([e for _, _, e in rows], dtype=np.float32)
    on = np.sum(queries * vectors, axis=1)
    res = collection.query(query_embeddings=queries.tolist(), n_results=min(3, len(ids)), include=["distances"])
    off = []
    for (own, _, _), found, dist in zip(rows, res["ids"], res["distances"], strict=True):
        others = [1.0 - float(d) for i, d in zip(found, dist, strict=True) if i != own]
        off.append(max(others, default=0.0))
    mask = ~np.eye(len(rows), dtype=bool)
    pairs = (vectors @ vectors.T)[mask]
    cross = (queries @ vectors.T)[mask]
    return Reference(
        on=[float(x) for x in np.percentile(on, QUANTILES)],
        off=[float(x) for x in np.percentile(off, QUANTILES)],
        pair_mean=float(pairs.mean()),
        query_mean=float(cross.mean()),
        query_std=float(cross.std()),
        count=len(ids),
        sampled=len(rows),
    )


# ---------------------------------------------------------------------------------------------------------
# The logistic


RETRIEVAL_FEATURES = ("top", "margin", "agreement", "lexical")
ANSWER_FEATURES = ("retrieval_logit", "generator", "support")
EXTRACT_FEATURES = ("retrieval_logit", "fit", "match", "agree")  # an extractive answer's (rag.consciousness.extract)


@dataclass
class Weights:
    """Logistic weights: `retrieval` = [bias, *RETRIEVAL_FEATURES] decides before generation; `answer` = [bias,
    *ANSWER_FEATURES] gives a generated answer's final confidence, `extract` = [bias, *EXTRACT_FEATURES] an
    extractive answer's. `fitted` summarises the fit that made them, if any."""

    retrieval: list[float]
    answer: list[float]
    extract: list[float] = field(default_factory=lambda: list(DEFAULT_EXTRACT))
    fitted: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Weights:
        w = cls(
            retrieval=list(d["retrieval"]),
            answer=list(d["answer"]),
            extract=_extract_weights(d.get("extract")),
            fitted=dict(d.get("fitted") or {}),
        )
        if (
            len(w.retrieval) != 1 + len(RETRIEVAL_FEATURES)
            or len(w.answer) != 1 + len(ANSWER_FEATURES)
            or len(w.extract) != 1 + len(EXTRACT_FEATURES)
        ):
            raise ValueError("calibration weights have the wrong length: re-fit them (eval answers --fit-calibration)")
        return w


def _extract_weights(saved: list[float] | None) -> list[float]:
    """Saved extractive weights, or the default when the store was saved before extractive answers or before
    their features changed (a re-fit replaces them)."""
    if saved and len(saved) == 1 + len(EXTRACT_FEATURES):
        return list(saved)
    return list(DEFAULT_EXTRACT)


# Fitted by bench/calibrate_confidence.py (see bench/RESULTS.md, confidence calibration); rounded. The extractive
# answers' on the development set of the answer benchmark (bench/RESULTS.md, answers end to end).
DEFAULT_EXTRACT = [-0.29, -0.32, 1.22, 1.09, 1.4]
DEFAULT_WEIGHTS = Weights(retrieval=[-2.49, 0.25, 1.79, 0.5, 2.67], answer=[-1.23, 1.24, 0.45, 1.22])


def sigmoid(z: float) -> float:
    """The logistic function, safe for large |z|."""
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def logit(w: Sequence[float], x: Sequence[float]) -> float:
    """w[0] + w[1:] . x"""
    return float(w[0] + sum(a * b for a, b in zip(w[1:], x, strict=True)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 0.01, steps: int = 5000) -> list[float]:
    """L2-regularised logistic regression by gradient descent: [bias, *weights]."""
    x = np.hstack([np.ones((len(x), 1)), np.asarray(x, dtype=np.float64)])
    y = np.asarray(y, dtype=np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        w -= 0.5 * (x.T @ (p - y) / len(y) + l2 * np.r_[0.0, w[1:]])
    return [float(v) for v in w]


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (ties count half); None unless both classes occur."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# ---------------------------------------------------------------------------------------------------------
# Saved with the store


def path_for(data_dir: str | Path, collection: str) -> Path:
    """Where one collection's calibration lives in the data directory."""
    return Path(data_dir) / "calibration" / f"{collection}.json"


def load(path: Path) -> tuple[Reference | None, Weights | None]:
    """The saved reference and weights (None for what is missing); a broken file is a clear error."""
    if not path.exists():
        return None, None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        ref = Reference.from_dict(d["reference"]) if d.get("reference") else None
        w = Weights.from_dict(d["weights"]) if d.get("weights") else None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable calibration ({e}); delete the file to measure it again") from None
    return ref, w


def save(path: Path, reference: Reference | None, weights: Weights | None) -> None:
    """Write the reference and (fitted) weights atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    d = {
        "version": VERSION,
        "reference": reference.to_dict() if reference else None,
        "weights": weights.to_dict() if weights else None,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
