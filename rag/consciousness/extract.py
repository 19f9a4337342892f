"""The words of a sentence that answer a factoid question: an answer is at most what the question needs.

A question asking who, when, where, how many, how long, which or what is answered by the phrase the question
does not already say, from the best sentence of the top retrieved document passages (`extract_answer`). The
sentence is cut into chunks at clause punctuation and at the question's own words, and each chunk is scored by
whether its words fit the kind of answer asked for (a number for "how many", a name for "who", a date for
"when"), by how close it sits to the question's words, and by its length (`answer_span`). The answer is always
a span of the cited sentence, so it is faithful by construction; a question of another kind (how to, why,
explain) gets no span and the backend answers it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from index.retrieve import Hit
from rag.consciousness.calibration import STOPWORDS, stem
from rag.consciousness.focus import lexical_scores, sentences

_TOKEN = re.compile(
    r"\d[\d,.:]*\d(?:-[A-Za-z]+)?|[A-Za-z0-9\u00C0-\u024F][\w'’\-\u00C0-\u024F]*[\w\u00C0-\u024F]|\w|[,;:()\u2013\u2014]"
)
_NUMBER = re.compile(r"^\d[\d,.]*$")
NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred "
    "thousand million half dozen first second third".split()
)
UNITS = frozenset(
    "minutes minute hours hour days day weeks week months month years year seconds metres meters miles "
    "kilometres grams kilograms litres degrees percent centimetres millimetres pm am celsius times".split()
)
MONTHS = frozenset(
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday spring summer autumn winter".split()
)
SPLITTERS = frozenset({",", ";", ":", "(", ")", "\u2013", "\u2014", "which", "who", "whose", "where", "while"})
LEADING = frozenset({"and", "or", "but", "then", "that", "is", "was", "are", "were", "be", "been", "by"})
MAX_WORDS = 10  # a factoid answer longer than this is a clause, not a phrase: no span is given


@dataclass(frozen=True)
class Span:
    """The answering phrase, where it sits in the sentence, and how well it fits the question (0..1)."""

    text: str
    start: int
    end: int
    fit: float


def kind_of(question: str) -> str | None:
    """The kind of answer a question asks for: number, time, date, person, place, thing; None when it asks for
    an explanation or a procedure (no phrase answers it)."""
    q = " ".join(question.lower().split())
    q = re.sub(
        r"^(for|into|in|at|on|to|by|from|since|until|of|with|between|after|before) (?=how|what|which|when)", "", q
    )
    if re.match(r"^(how (many|much|long|far|old|often|big|tall|high|wide|deep|heavy|fast|large|soon|late))\b", q):
        return "number"
    if re.match(r"^what (size|altitude|height|temperature|length|distance|age|price|weight|speed|percentage)\b", q):
        return "number"
    if re.match(r"^(what|which) (time|hour)\b", q):
        return "time"
    if re.match(r"^(when|(what|which) (year|date|day|month|century|season))\b", q):
        return "date"
    if re.match(r"^(who|whom|whose)\b", q):
        return "person"
    if re.match(
        r"^(where|(what|which) (city|town|country|place|mountain|river|street|station|stations|room|hall))\b", q
    ):
        return "place"
    if re.match(r"^(how|why|explain|describe|summari[sz]e|tell me|can|could|should|is|are|do|does)\b", q):
        return None
    if re.match(r"^(what|which|name|at what|to what|from what|for what|in what|on what|with what)\b", q):
        return "thing"
    return None


def _key(word: str) -> str:
    return stem(word.lower().strip(".'’")).rstrip("e")[:6]


def _is_number(w: str) -> bool:
    lw = w.lower().strip(".")
    return bool(_NUMBER.match(lw)) or lw in NUMBER_WORDS


def _type_fit(kind: str, words: list[str]) -> float:
    lower = [w.lower().strip(".") for w in words]
    numbers = sum(_is_number(w) for w in words)
    caps = sum(w[:1].isupper() for w in words)
    if kind in ("number", "time"):
        return 1.0 if numbers else 0.0
    if kind == "date":
        return 1.0 if any(_NUMBER.match(w) or w in MONTHS for w in lower) else 0.2 if numbers else 0.0
    if kind in ("person", "place"):
        return min(1.0, caps / max(1, len(words)) + 0.5) if caps else 0.1
    return 0.6 if any(w not in STOPWORDS for w in lower) else 0.0


MODIFIERS = frozenset(
    {"about", "around", "up", "to", "over", "under", "nearly", "almost", "more", "less", "than", "only"}
)
TIME_WORDS = frozenset({"before", "after", "since", "until", "from"})
PREPOSITIONS = frozenset({"in", "on", "at", "for", "from", "since", "during", "with", "after", "before"})
LOCATIVE = frozenset({"in", "on", "at", "near", "inside", "under", "beside", "behind"})
NAME_GLUE = frozenset({"von", "van", "de", "der", "of", "the", "da", "le", "la", "'s"})


def _narrow(kind: str, words: list[str]) -> tuple[int, int]:
    """The part of a chunk that names what `kind` asks for: the quantity with its unit, the date, the run of
    capitalised words; the whole chunk for a thing (or when nothing narrower is there)."""
    lower = [w.lower().strip(".") for w in words]
    if kind in ("number", "date", "time"):
        marks = [i for i, w in enumerate(words) if _is_number(w) or (kind == "date" and lower[i] in MONTHS)]
        if not marks:
            return 0, len(words)
        a = marks[0]
        b = a + 1
        while b < len(words) and (b in marks or (lower[b] in ("to", "and", "or") and b + 1 in marks)):
            b += 1
        extra = 0
        while b < len(words) and extra < 2 and lower[b] not in STOPWORDS:
            if kind != "number" and lower[b] not in UNITS | MONTHS and not _is_number(words[b]):
                break
            b, extra = b + 1, extra + 1
        keep = MODIFIERS if kind == "number" else TIME_WORDS
        while a > 0 and lower[a - 1] in keep:
            a -= 1
        return a, b
    if kind in ("person", "place"):
        runs, i = [], 0
        while i < len(words):
            if words[i][:1].isupper():
                j = i + 1
                while j < len(words) and (
                    words[j][:1].isupper()
                    or (lower[j] in NAME_GLUE and j + 1 < len(words) and words[j + 1][:1].isupper())
                ):
                    j += 1
                runs.append((i, j))
                i = j
            else:
                i += 1
        if runs:
            return max(runs, key=lambda r: (r[1] - r[0], r[0]))
        if kind == "person":  # "by volunteers in 1979": the doer, not where or when
            cut = next((i for i, w in enumerate(lower) if i > 0 and w in PREPOSITIONS), len(words))
            return 0, cut
    return 0, len(words)


def answer_span(question: str, sentence: str) -> Span | None:
    """The phrase of `sentence` that answers `question`, or None when the question is not a factoid one or no
    chunk of the sentence fits it."""
    kind = kind_of(question)
    if kind is None:
        return None
    asked = {_key(w) for w in re.findall(r"\w+", question) if w.lower() not in STOPWORDS}
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(sentence)]
    if not toks:
        return None
    first = toks[0][0]
    if first[:1].isupper() and (len(toks) < 2 or not toks[1][0][:1].isupper()):
        toks[0] = (first.lower(), toks[0][1], toks[0][2])  # a capital that only opens the sentence names nothing
    in_q = [t[0].lower() not in STOPWORDS and _key(t[0]) in asked for t in toks]
    anchors = [i for i, hit in enumerate(in_q) if hit]
    chunks: list[list[int]] = [[]]
    for i, (w, _, _) in enumerate(toks):
        if in_q[i] or w.lower() in SPLITTERS:
            chunks.append([])
        else:
            chunks[-1].append(i)
    best: Span | None = None
    for chunk in chunks:
        if not chunk:
            continue
        whole = chunk  # where the chunk sits: its distance to the question's words counts, not its narrowed part's
        lo, hi = _narrow(kind, [toks[i][0] for i in chunk])
        chunk = chunk[lo:hi]
        while len(chunk) > 1 and toks[chunk[0]][0].lower() in LEADING | {"the", "a", "an"}:
            chunk = chunk[1:]
        while chunk and toks[chunk[-1]][0].lower() in STOPWORDS - {"am", "pm"}:
            chunk = chunk[:-1]
        if not chunk or len(chunk) > MAX_WORDS:
            continue
        words = [toks[i][0] for i in chunk]
        if all(w.lower() in STOPWORDS for w in words):
            continue
        fit = _type_fit(kind, words)
        if fit <= 0:
            continue
        distance = min((min(abs(i - q) for i in whole) for q in anchors), default=len(toks))
        near = 1.0 / (1.0 + 0.3 * max(0, distance - 1))
        if anchors and whole[-1] < anchors[0]:
            near *= 0.7  # an answer usually follows what the question names ("the choir rehearses in ...")
        before = toks[chunk[0] - 1][0].lower() if chunk[0] > 0 else ""
        if kind == "place" and (before in LOCATIVE or words[0].lower() in LOCATIVE):
            fit = min(1.0, fit + 0.3)
        brevity = 1.0 / (1.0 + 0.08 * max(0, len(chunk) - 3))
        score = fit * near * brevity
        if best is None or score > best.fit:
            start, end = toks[chunk[0]][1], toks[chunk[-1]][2]
            if kind == "place" and before in LOCATIVE and not words[0][:1].isupper():
                start = toks[chunk[0] - 1][1]  # "in the fridge", not "the fridge"
            best = Span(sentence[start:end], start, end, score)
    return best


@dataclass(frozen=True)
class Extract:
    """An extractive answer: the phrase, the sentence it comes from, the passage (a retrieved hit) holding the
    sentence, how well the phrase fits the question (`fit`) and how strongly the sentence was chosen (`match`:
    the question's words it holds, its cosine to the question, its phrase's fit, less its passage's rank)."""

    text: str
    sentence: str
    hit: Hit
    fit: float
    match: float


PASSAGES = 3  # sentences are chosen from the best this many retrieved passages (chosen on the dev set)
FIT_WEIGHT = 0.3  # how much a sentence holding a phrase of the asked kind counts, beside its lexical and cosine
RANK_PENALTY = 0.1  # per place a passage sits below the first in retrieval


def extract_answer(
    question: str,
    hits: Sequence[Hit],
    *,
    query_vector: np.ndarray | None = None,
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> Extract | None:
    """The phrase answering a factoid `question` from the best sentence of the top retrieved document passages
    (`"kind": "text"`), or None when the question is not a factoid one, no passage is a document passage, or no
    sentence holds a phrase of the kind asked for. A sentence is scored by the question's words it holds, its
    cosine to the question (with `embed`), whether it holds such a phrase, and its passage's rank."""
    if kind_of(question) is None:
        return None
    parts: list[tuple[str, int, Hit]] = []
    for rank, h in enumerate(hits[:PASSAGES]):
        if h.metadata.get("kind") != "text":
            continue
        parts += [(h.response[a:b], rank, h) for a, b in sentences(h.response)]
    if not parts:
        return None
    texts = [p[0] for p in parts]
    lexical = np.asarray(lexical_scores(question, texts), dtype=np.float32)
    spans = [answer_span(question, t) for t in texts]
    score = lexical + FIT_WEIGHT * np.asarray([s.fit if s else 0.0 for s in spans], dtype=np.float32)
    score -= RANK_PENALTY * np.asarray([p[1] for p in parts], dtype=np.float32)
    if embed is not None and query_vector is not None:
        score += np.asarray(embed(texts), dtype=np.float32) @ np.asarray(query_vector, dtype=np.float32)
    i = int(np.argmax(score))
    span = spans[i]
    if span is None:
        return None
    return Extract(text=span.text, sentence=texts[i], hit=parts[i][2], fit=span.fit, match=float(score[i]))
