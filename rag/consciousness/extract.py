"""The words of a sentence that answer a factoid question: an answer is at most what the question needs.

A question asking who, when, where, how many, how long, which or what is answered by the phrase the question
does not already say, from the best sentence of the top retrieved document passages (`extract_answer`). The
sentence is cut into chunks at clause punctuation and at the question's own words, and each chunk is scored by
whether its words fit the kind of answer asked for (a number for "how many", a name for "who", a date for
"when"; a quantity whose unit measures what was asked: minutes for "how long", grams for "how much flour"), by
how close it sits to the question's words, and by its length (`answer_span`). A why-question is answered by a
stated reason ("because of snow"), a how-question by a stated means ("by fanning it"). The answer is always a
span of the cited sentence, so it is faithful by construction; any other question (how to, explain, or a why
with no stated reason) gets no span and the backend answers it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from index.retrieve import Hit
from rag.consciousness.asked import (
    AUXILIARY,
    COLOURS,
    DAYTIME,
    MEASURE_OF,
    MONTHS,
    NUMBER,
    ORDINALS,
    UNITS,
    WIDTH,
    asked_measure,
    is_number,
    key,
    kind_of,
    measure_agreement,
)
from rag.consciousness.calibration import STOPWORDS, content_words
from rag.consciousness.focus import lexical_scores, sentences

_TOKEN = re.compile(
    r"\d[\d,.:]*\d(?:-[A-Za-z]+)?|[A-Za-z0-9\u00C0-\u024F][\w'’\-\u00C0-\u024F]*[\w\u00C0-\u024F]|\w|[,;:()\u2013\u2014]"
)
SPLITTERS = frozenset({",", ";", ":", "(", ")", "\u2013", "\u2014", "which", "who", "whose", "where", "while"})
LEADING = frozenset({"and", "or", "but", "then", "that", "is", "was", "are", "were", "be", "been", "by"})
MAX_WORDS = 10  # a factoid answer longer than this is a clause, not a phrase: no span is given


@dataclass(frozen=True)
class Span:
    """The answering phrase, where it sits in the sentence, how well it fits the question (0..1), whether a
    quantity measures what was asked (`measure_agreement`), and how far its words are of the kind asked for,
    wherever they sit (`typed`: a name for "who", a number of the asked measure for "how many")."""

    text: str
    start: int
    end: int
    fit: float
    agree: float = 0.0
    typed: float = 1.0


def _type_fit(kind: str, words: list[str]) -> float:
    lower = [w.lower().strip(".") for w in words]
    numbers = sum(is_number(w) for w in words)
    caps = sum(w[:1].isupper() for w in words)
    if kind in ("number", "time"):
        pairs = zip(lower, lower[1:], strict=False)
        counted = any(w in ("a", "an") and MEASURE_OF.get(n) == "duration" for w, n in pairs)
        return 1.0 if numbers or counted else 0.0  # "about a minute"
    if kind == "colour":
        return 1.0 if any(w in COLOURS for w in lower) else 0.0
    if kind == "date":
        if any(MEASURE_OF.get(w) not in (None, "duration", "clock") for w in lower):
            return 0.0  # "18 pounds" is no date
        if any(NUMBER.match(w) or w in MONTHS for w in lower):
            return 1.0
        relative = any(MEASURE_OF.get(w) == "duration" for w in lower) and any(w in TIME_WORDS for w in lower)
        return 0.6 if relative else 0.2 if numbers else 0.0  # "ten minutes before the start"
    if kind in ("person", "place"):
        return min(1.0, caps / max(1, len(words)) + 0.5) if caps else 0.1
    return 0.6 if any(w not in STOPWORDS for w in lower) else 0.0


MODIFIERS = frozenset(
    {"about", "around", "up", "to", "over", "under", "nearly", "almost", "more", "less", "than", "only"}
)
TIME_WORDS = frozenset({"before", "after", "since", "until", "from", "ahead", "later", "earlier"})
PREPOSITIONS = frozenset({"in", "on", "at", "for", "from", "since", "during", "with", "after", "before"})
LOCATIVE = frozenset({"in", "on", "at", "near", "inside", "outside", "under", "beside", "behind", "opposite"})
NAME_GLUE = frozenset({"von", "van", "de", "der", "of", "the", "da", "le", "la", "'s"})
CLAUSE = frozenset({"as", "to", "by", "of", "is", "are", "was", "were", "and", "or"})


def _runs(kind: str, words: list[str]) -> list[tuple[int, int]]:
    """The parts of a chunk that name what `kind` asks for: each quantity with its unit, each date, the runs of
    capitalised words; the whole chunk for a thing (or when nothing narrower is there)."""
    lower = [w.lower().strip(".") for w in words]
    if kind in ("number", "date", "time"):

        def mark(i: int) -> bool:
            if kind == "date" and lower[i] in MONTHS:
                return True
            if lower[i] in ("a", "an") and i + 1 < len(words) and MEASURE_OF.get(lower[i + 1]) == "duration":
                return True  # "a minute", "a week ahead"
            if not is_number(words[i]):
                return False
            # "Second World War", "the first two jugs": an ordinal or a capitalised word is no count
            dated = i > 0 and lower[i - 1] in MONTHS  # "January 2025" is a year, no count
            return not (kind == "number" and (lower[i] in ORDINALS or (words[i][:1].isupper() and i > 0) or dated))

        marks = [i for i in range(len(words)) if mark(i)]
        joins = ("to", "and", "or", "at") if kind == "date" else ("to", "and", "or")  # "Thursday evenings at 6.30"
        if not marks:
            return [(0, len(words))]
        out = []
        i = 0
        while i < len(marks):
            a = marks[i]
            b = a + 1
            while b < len(words) and (b in marks or (lower[b] in joins and b + 1 in marks)):
                b += 1
            extra = 2 if "-" in lower[b - 1] else 0  # "1.2-metre": the unit is in the word
            while b < len(words) and (lower[b] not in STOPWORDS or lower[b] == "am"):  # "9.30 am"
                quantity = lower[b] in UNITS | MONTHS | DAYTIME or is_number(words[b])  # "2 hours 58 minutes"
                if (kind != "number" or extra >= 2) and not quantity:
                    break  # a counted noun ("four tart apples") is two words at most, none after a unit
                b, extra = b + 1, extra + (0 if quantity else 1)
                extra = 2 if lower[b - 1] in UNITS else extra
            keep = MODIFIERS if kind == "number" else TIME_WORDS
            while a > 0 and lower[a - 1] in keep:
                a -= 1
            out.append((a, b))
            while i < len(marks) and marks[i] < b:
                i += 1
        return out
    if kind == "colour":
        return [(i, i + 1) for i, w in enumerate(lower) if w in COLOURS] or [(0, len(words))]
    if kind in ("person", "place"):
        # "Spokes on Mill Road": a shop on its street; "Tom and Ella": the people asked about
        glue = NAME_GLUE | ({"on"} if kind == "place" else {"and"})
        runs, i = [], 0
        while i < len(words):
            if words[i][:1].isupper():
                j = i + 1
                while j < len(words) and (
                    words[j][:1].isupper() or (lower[j] in glue and j + 1 < len(words) and words[j + 1][:1].isupper())
                ):
                    j += 1
                runs.append((i, j))
                i = j
            else:
                i += 1
        # a month names no place or person, and a person is no name after "at" or "in" ("Dr Okafor at Mill Road
        # Surgery"); a doer is the name after "by" ("serviced by Mark from HeatRight")
        named = [r for r in runs if not any(w in MONTHS for w in lower[r[0] : r[1]])]
        if kind == "person":
            named = [r for r in named if r[0] == 0 or lower[r[0] - 1] not in LOCATIVE]
            doer = [r for r in named if r[0] > 0 and lower[r[0] - 1] == "by"]
            named = doer or named
        if named:
            return [max(named, key=lambda r: (r[1] - r[0], r[0]))]
        if kind == "person":  # "by volunteers in 1979": the doer, not where or when
            cut = next((i for i, w in enumerate(lower) if i > 0 and w in PREPOSITIONS), len(words))
            return [(0, cut)]
        return [_place_phrase(lower)]
    return [(0, len(words))]


def _place_phrase(lower: list[str]) -> tuple[int, int]:
    """A place named without capitals, in a chunk of lower-cased words: the chunk less its phrases of time ("on
    Thursday evenings at 6.30 pm outside the leisure centre": "outside the leisure centre"); "in the drawer under
    the microwave" stays whole."""
    starts = [i for i, w in enumerate(lower) if w in LOCATIVE] or [0]  # "sits behind the greenhouse": behind ...
    bounds = list(zip(starts, starts[1:] + [len(lower)], strict=True))
    places = [(a, b) for a, b in bounds if not any(w in MONTHS or is_number(w) for w in lower[a : a + 3])]
    if not places:
        return (0, len(lower))
    a, b = places[0]
    for c, d in places[1:]:
        if c != b:
            break
        b = d
    return (a, b)


AGREEMENT_FACTOR = {1.0: 1.0, 0.0: 0.7, -1.0: 0.2}


REASON = re.compile(r"\b(?:because(?: of)?|due to|so that|in order to)\s[^,;:.]+", re.IGNORECASE)
# "by fanning it", "by direct debit"
MANNER = re.compile(r"\bby (?:[a-z]+ing\b[^,;:.]*|[a-z]+(?: [a-z]+)?(?=[,;:.]|$| (?:on|in|at|every|each|for)\b))")
CONSEQUENCE = re.compile(r"(?:^|[,;:]\s*(?:but\s+|and\s+)?)([^,;:]+?),?\s+so\s+(?!that\b)(.+)$", re.IGNORECASE)


def _clause_span(kind: str, question: str, sentence: str) -> Span | None:
    """A why-question's reason ("because of snow"; the clause before ", so ...") or a how-question's means ("by
    fanning it"), when the sentence states one beside the question's words."""
    asked = {key(w) for w in re.findall(r"\w+", question) if w.lower() not in STOPWORDS}
    found = [(m.start(), m.end()) for m in (REASON if kind == "reason" else MANNER).finditer(sentence)]
    if kind == "reason":
        m = CONSEQUENCE.search(sentence)
        if m and {key(w) for w in re.findall(r"\w+", m.group(2))} & asked:
            found.append((m.start(1), m.end(1)))
    if not found:
        return None
    spans = []
    for a, b in found:
        before = {key(w) for w in re.findall(r"\w+", sentence[:a])[-8:]}
        after = {key(w) for w in re.findall(r"\w+", sentence[b:])[:8]}
        near = len((before | after) & asked) / max(1, len(asked))
        text = sentence[a:b].strip()
        if len(text.split()) > 2 * MAX_WORDS:
            continue
        spans.append(Span(text, a, a + len(text), 0.5 + 0.5 * near, 0.0))
    return max(spans, key=lambda s: s.fit, default=None)


def _preposition_at(toks: list[tuple[str, int, int]], i: int) -> int:
    """How many tokens before token `i` its preposition stands ("on gravel": 1, "on the road": 2), 0 for none."""
    back = 2 if i > 1 and toks[i - 1][0].lower() in ("the", "a") else 1
    return back if i >= back and toks[i - back][0].lower() in ("on", "in", "at", "for", "during") else 0


def _clause_between(toks: list[tuple[str, int, int]], chunk: list[int], anchor: int) -> bool:
    """Whether a new clause (";", or ", and") starts between a candidate and a question word ("X, but not Y"
    contrasts the same thing: no new clause)."""
    a, b = (chunk[-1], anchor) if chunk[-1] < anchor else (anchor, chunk[0])
    words = [t[0].lower() for t in toks[a + 1 : b]]
    return ";" in words or any(w == "," and n == "and" for w, n in zip(words, words[1:], strict=False))


def _gap(chunk: list[int], anchor: int, back: int) -> int:
    """Tokens between a candidate and a question word; a qualifier ("80 psi on the road") is measured from its
    preposition, so it binds the quantity just before it."""
    if back and chunk[-1] < anchor:
        return max(0, anchor - back - chunk[-1])
    return min(abs(i - anchor) for i in chunk)


def answer_span(question: str, sentence: str) -> Span | None:
    """The phrase of `sentence` that answers `question`, or None when the question is not a factoid one or no
    chunk of the sentence fits it."""
    kind = kind_of(question)
    if kind is None:
        return None
    if kind in ("reason", "manner"):
        return _clause_span(kind, question, sentence)
    wanted, noun, unit = asked_measure(question) if kind == "number" else (None, None, None)
    head = re.match(rf"^\W*(?:\w+ )?(?:which|what) (\w+)( {AUXILIARY}\b)?", question.lower())
    focus = key(head.group(1)) if head and head.group(1) not in STOPWORDS else None
    # "which tomatoes am I growing": the asked noun (followed by a verb), not "what produced the explosions"
    thing = focus if head and head.group(2) else None
    words_asked = re.findall(r"\w+", question) + [m.group(0) for m in _TOKEN.finditer(question)]  # and "Wi-Fi"
    asked = {key(w) for w in words_asked if w.lower() not in STOPWORDS}
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(sentence)]
    if not toks:
        return None
    first = toks[0][0]
    if kind != "person" and first[:1].isupper() and (len(toks) < 2 or not toks[1][0][:1].isupper()):
        toks[0] = (first.lower(), toks[0][1], toks[0][2])  # an opening capital names nothing (but "Maria recommended")
    in_q = [t[0].lower() not in STOPWORDS and key(t[0]) in asked for t in toks]
    for i in range(len(toks) - 1):  # "the Penny Red" beside "the Penny Black": a name that only starts like asked
        if in_q[i] and toks[i][0][:1].isupper() and toks[i + 1][0][:1].isupper() and not in_q[i + 1]:
            in_q[i] = False
    anchors = [i for i, hit in enumerate(in_q) if hit]
    # "on gravel" in the question and the sentence: a qualifier the answer sits beside, before or after it
    tail = (re.findall(r"\w+", question.lower()) or [""])[-1]  # a question ending on "with", "to", "at" ...
    tail = tail if tail in PREPOSITIONS | LOCATIVE | {"to", "about", "by"} else None
    qualified = {key(w) for w in re.findall(r"\b(?:on|in|at|for|during) (?:the |a )?(\w+)", question.lower())}
    phrase = {q: _preposition_at(toks, q) if key(toks[q][0]) in qualified else 0 for q in anchors}
    chunks: list[list[int]] = [[]]
    for i, (w, _, _) in enumerate(toks):
        if (in_q[i] and w.lower() != unit) or w.lower() in SPLITTERS:  # "250 grams" stays whole
            chunks.append([])
        else:
            chunks[-1].append(i)
    best: Span | None = None
    best_rank = 0.0
    for whole in chunks:
        if not whole:
            continue
        for lo, hi in _runs(kind, [toks[i][0] for i in whole]):
            chunk = whole[lo:hi]
            while len(chunk) > 1 and toks[chunk[0]][0].lower() in LEADING | {"the", "a", "an"}:
                chunk = chunk[1:]
            while chunk and toks[chunk[-1]][0].lower() in STOPWORDS - {"am", "pm"}:
                chunk = chunk[:-1]
            names = bool(thing and chunk and chunk[-1] + 1 < len(toks) and key(toks[chunk[-1] + 1][0]) == thing)
            if names:  # "as a nurse at Addenbrooke's [Hospital]": the words naming the asked noun
                cut = [k for k, i in enumerate(chunk) if toks[i][0].lower() in PREPOSITIONS | LOCATIVE | CLAUSE]
                named = chunk[cut[-1] + 1 :] if cut else chunk
                while len(named) > 1 and toks[named[0]][0].lower() in ("the", "a", "an"):
                    named = named[1:]
                # "80,000 bees" says how many, not which ("the third floor" says which)
                names = not all(is_number(toks[i][0]) and toks[i][0].lower() not in ORDINALS for i in named)
                chunk = named if names else chunk
            if kind in ("thing", "person") and len(chunk) > 1 and toks[chunk[0]][0].lower() == tail:
                chunk = chunk[1:]  # "allergic to penicillin" for "what am I allergic to?"
            if not chunk or len(chunk) > MAX_WORDS:
                continue
            words = [toks[i][0] for i in chunk]
            if all(w.lower() in STOPWORDS or key(w) in asked for w in words):
                continue  # nothing the question does not already say
            fit = _type_fit(kind, words)
            if fit <= 0:
                continue
            agree = 0.0
            if kind == "number":
                after = [toks[i][0] for i in range(chunk[-1] + 1, min(len(toks), chunk[-1] + 4))]
                agree = measure_agreement(words, after, wanted, noun)
                fit *= AGREEMENT_FACTOR[agree]
            own = min((_gap(chunk, q, phrase[q]) for q in anchors), default=len(toks))
            distance = min((min(abs(i - q) for i in whole) for q in anchors), default=len(toks))
            if kind in ("number", "date", "time"):  # several quantities in one chunk: the one by the question's words
                distance = (distance + own) / 2
            nearest = min(anchors, key=lambda q: min(abs(i - q) for i in chunk), default=-1)
            if kind in ("number", "date", "time") and nearest > chunk[-1] and not phrase.get(nearest):
                distance += 0.5  # an answer usually follows what the question names
            near = 1.0 / (1.0 + 0.3 * max(0, distance - 1))
            if anchors and all(_clause_between(toks, chunk, q) for q in anchors):
                near *= 0.5  # "standup is at 9.30 am, and the quarterly review is ...": another clause's
            if anchors and whole[-1] < anchors[0] and not phrase[anchors[0]]:
                near *= 0.7  # an answer usually follows what the question names ("the choir rehearses in ...")
            before = toks[chunk[0] - 1][0].lower() if chunk[0] > 0 else ""
            if kind == "place" and (before in LOCATIVE or words[0].lower() in LOCATIVE):
                fit = min(1.0, fit + 0.3)
            doer = kind == "person" and (before == "by" or words[0].lower() == "by")
            if doer:
                fit = min(1.0, fit + 0.3)  # "reopened by volunteers": the doer of a passive
            if focus is not None and nearest >= 0 and key(toks[nearest][0]) == focus and distance <= 2:
                fit = min(1.0, fit * 1.3)  # beside the noun the question asks about ("which metals": "metals such as")
            opener = toks[whole[0]][0].lower()
            if thing and opener in ("and", "or") and key(toks[whole[0] - 1][0]) == thing:
                fit *= 0.3  # "Sungold tomatoes and two rows of beans": the item after "and" is another one
            if kind == "thing" and before in ("is", "are", "was", "were") and chunk[0] - 2 in anchors:
                fit = min(1.0, fit * 1.3)  # "their one task is to mate ...": what the question's noun is
            brevity = 1.0 / (1.0 + 0.08 * max(0, len(chunk) - 3))
            score = fit * near * brevity
            # "serviced by Mark", not "is a Worcester Bosch"; "the third floor" for "which floor"; "with Aviva"
            # for "insured with?"
            rank = score * (1.25 if doer else 1.0) * (1.3 if names else 1.0) * (1.2 if before == tail else 1.0)
            if best is None or rank > best_rank:
                best_rank = rank
                start, end = toks[chunk[0]][1], toks[chunk[-1]][2]
                if kind == "place" and before in LOCATIVE and not words[0][:1].isupper():
                    start = toks[chunk[0] - 1][1]  # "in the fridge", not "the fridge"
                if names:
                    end = toks[chunk[-1] + 1][2]  # "Sungold tomatoes", "Regent Street": with the asked noun
                while end < len(sentence) and sentence[end].isalnum():
                    end += 1  # "Worcester Bosch 30i": a word is never cut
                best = Span(sentence[start:end], start, end, score, agree, fit)
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
    agree: float = 0.0  # +1: its unit measures what was asked; -1: something else; 0: cannot be told


def asked_names(question: str) -> list[str]:
    """The names a question asks about: its capitalised words after the first, lower-cased, without "'s"."""
    words = re.findall(r"[A-Za-z0-9][\w'’.-]*", question)[1:]
    return [re.sub(r"['’]s?$", "", w).rstrip(".").lower() for w in words if w[:1].isupper()]


def unsaid_names(question: str, texts: Sequence[str]) -> list[str]:
    """The names a question asks about (`asked_names`) that none of `texts` says: a passage that never says one
    answers another question."""
    held = [t.lower() for t in texts]
    return [n for n in asked_names(question) if not any(n in t for t in held)]


PRONOUN = re.compile(r"^(it|its|they|their|he|his|she|her|this|these|there)\b", re.IGNORECASE)
PASSAGES = 3  # sentences are chosen from the best this many retrieved passages (chosen on the dev set)
FIT_WEIGHT = 0.5  # how much a sentence holding a phrase of the asked kind counts, beside its lexical and cosine
RANK_PENALTY = 0.1  # per place a passage sits below the first in retrieval
ANOTHER = 0.5  # a sentence that leaves out what its passage says elsewhere may be about another thing: fit halved
MIN_FIT = 0.25  # a phrase less of the kind asked is no answer ("installed" for "who paid"): the backend answers


def _about_another(question: str, i: int, read: list[str], parts: list[tuple[str, int, Hit]]) -> set[str]:
    """The words of the question that sentence `i` leaves out and another sentence of its passage says: "Council
    tax is paid by direct debit" does not say how the mortgage of the sentence before is paid. The passage's
    title counts as said ("Car": "The insurance is with Aviva" is the car's)."""
    hit = parts[i][2]
    said = content_words(read[i] + " " + hit.prompt, WIDTH)
    missing = content_words(question, WIDTH) - said
    others = [read[k] for k, p in enumerate(parts) if p[2] is hit and k != i]
    return {w for w in missing if any(w in content_words(t, WIDTH) for t in others)}


def extract_answer(
    question: str,
    hits: Sequence[Hit],
    *,
    query_vector: np.ndarray | None = None,
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> Extract | None:
    """The phrase answering a factoid `question` from the best sentence of the top retrieved document passages
    (`"kind": "text"`), or None when the question is not a factoid one, no passage is a document passage, or no
    sentence holds a phrase of the kind asked for (`Span.typed` at least `MIN_FIT`). A sentence is scored by the
    question's words it holds, its cosine to the question (with `embed`), whether it holds such a phrase, and its
    passage's rank; its phrase's fit is halved when the sentence may be about another thing (`_about_another`)."""
    if kind_of(question) is None:
        return None
    parts: list[tuple[str, int, Hit]] = []
    for rank, h in enumerate(hits[:PASSAGES]):
        if h.metadata.get("kind") != "text" or unsaid_names(question, [h.prompt, h.response]):
            continue
        parts += [(h.response[a:b], rank, h) for a, b in sentences(h.response)]
    if not parts:
        return None
    texts = [p[0] for p in parts]
    # "It was issued on 1 May 1840": a sentence opening on a pronoun is read with the one before it for the
    # question's words (what "it" names), not for its cosine or its phrase
    read: list[str] = []
    for k, t in enumerate(texts):
        same = k > 0 and parts[k - 1][2] is parts[k][2]
        read.append(read[-1] + " " + t if same and PRONOUN.match(t) else t)
    lexical = np.asarray(lexical_scores(question, read, WIDTH), dtype=np.float32)
    spans = [answer_span(question, t) for t in texts]
    score = lexical + FIT_WEIGHT * np.asarray([s.fit if s else 0.0 for s in spans], dtype=np.float32)
    score -= RANK_PENALTY * np.asarray([p[1] for p in parts], dtype=np.float32)
    if embed is not None and query_vector is not None:
        score += np.asarray(embed(texts), dtype=np.float32) @ np.asarray(query_vector, dtype=np.float32)
    i = int(np.argmax(score))
    span = spans[i]
    if span is None:
        return None
    if span.typed < MIN_FIT:
        return None
    another = _about_another(question, i, read, parts)
    if another & content_words(" ".join(asked_names(question)), WIDTH):
        return None  # "What is Tom's birthday?" over "Anna's birthday is on 3 September": another person's
    fit = span.fit * (ANOTHER if another else 1.0)
    return Extract(text=span.text, sentence=texts[i], hit=parts[i][2], fit=fit, match=float(score[i]), agree=span.agree)
