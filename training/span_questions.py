"""Questions written from passages around a short answer span (a year, date, time, amount, count or name).

Rule-based question generation in the manner of unsupervised QA by cloze translation (Lewis et al., 2019): a
sentence of the passage is cut to the clause that holds a span, the span is replaced by a wh-phrase chosen by
its type, and simple clause shapes are turned around ("X was finished in 1462" -> "When was X finished?");
others stay echo questions ("The Berlin Wall fell in what year?"). The answer is the span, found verbatim in
its sentence and the sentence verbatim in the passage (checked), so a model trained on them learns to find the
answer in the reference rather than to recall it. No model is asked: a 135M model writes ~5 tokens/s here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from training.text import norm, sentences

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DAY_YEAR = r"\d{1,2}(?:, \d{4})?"
_NUMBER_WORDS = "two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|hundred"
_UNITS = (
    "metres|meters|kilometres|kilometers|km|miles|feet|inches|centimetres|cm|millimetres|mm|minutes|hours|"
    "seconds|days|weeks|months|years|grams|g|kilograms|kg|tonnes|litres|liters|ml|degrees|volts|watts|pages|"
    "people|members|times|steps|cups|tablespoons|teaspoons|bytes|MB|GB"
)
# (type, pattern with the answer span as group "a"); tried in this order, the first span per place wins.
_SPANS: list[tuple[str, re.Pattern[str]]] = [
    ("date", re.compile(rf"\b(?:on )?(?P<a>\d{{1,2}} (?:{_MONTHS})(?: \d{{4}})?|(?:{_MONTHS}) {_DAY_YEAR})\b")),
    ("time", re.compile(r"\b(?:at )?(?P<a>\d{1,2}(?::\d{2})? ?(?:am|pm|a\.m\.|p\.m\.)|\d{1,2}:\d{2})(?![\w:])")),
    ("percent", re.compile(r"\b(?P<a>\d+(?:\.\d+)? ?(?:%|percent|per cent))")),
    ("money", re.compile(r"(?P<a>[$£€]\d+(?:[.,]\d+)*(?: (?:million|billion|thousand))?)")),
    ("year", re.compile(r"\b(?:in )?(?P<a>(?:1[0-9]|20)\d{2})\b(?![\d,:%]|\.\d)")),
    ("count", re.compile(rf"\b(?P<a>(?:\d[\d,.]*|{_NUMBER_WORDS})) (?P<unit>(?:{_UNITS})|[a-z]{{3,}}s)\b")),
    ("name", re.compile(r"(?<=[a-z,] )(?P<a>(?:[A-Z][a-z]+|[A-Z]{2,}\d*)(?: (?:of |de |von |the )?[A-Z][a-z]+)*)")),
]
_WH = {"date": "what date", "time": "what time", "percent": "what percentage", "money": "how much", "year": "what year"}
_LEAD = {"date": "on", "time": "at", "year": "in"}
_PRONOUN_START = re.compile(r"^(?:It|Its|They|Their|He|His|She|Her|This|These|Those|That|There|We|You|I|Our)\b")
_BE = "is|are|was|were"
_SUBJECT = r"(?P<s>[A-Z][\w'’ -]{2,60}?)"
_PASSIVE = re.compile(rf"^{_SUBJECT} (?P<be>{_BE}) (?P<v>\w+(?:ed|en|wn|lt|nt|ught|ld))\b(?P<rest>.*)$")
_HAVE = re.compile(r"^(?P<s>[A-Z][\w'’ -]{2,60}?) (?P<v>has|have|had|holds|hold|held|owns|own|owned)\b (?P<rest>.*)$")
_COPULA_END = re.compile(rf"^(?P<s>[A-Z][\w'’ -]{{2,60}}?) (?P<be>{_BE}) (?P<rest>.*)$")
_HAVE_AUX = {"has": "does", "have": "do", "had": "did", "holds": "does", "hold": "do", "held": "did"}
_HAVE_AUX |= {"owns": "does", "own": "do", "owned": "did"}
_HAVE_BASE = {"has": "have", "have": "have", "had": "have", "holds": "hold", "hold": "hold", "held": "hold"}
_HAVE_BASE |= {"owns": "own", "own": "own", "owned": "own"}
_STOP_NAMES = {"The", "A", "An", "In", "On", "At", "If", "When", "For", "And", "But", "Or", "I"}


@dataclass(frozen=True)
class SpanQuestion:
    """A question, its answer span and the sentence of the passage that holds it."""

    question: str
    answer: str
    sentence: str
    type: str


def _clause(sentence: str, start: int, end: int) -> tuple[str, int, int] | None:
    """The clause of the sentence holding [start, end) (with the one before when it is short; an opening phrase
    that holds the span goes after the clause it leads), and where the span lies in it; None when too short."""
    body = sentence.rstrip(".!?")
    marks = [(m.start(), m.end()) for m in re.finditer(r"[,;:()]| - | – | — ", body)]
    right = next((a for a, _ in marks if a >= end), len(body))
    lefts = [b for _, b in marks if b <= start]
    left = lefts[-1] if lefts else 0
    if len(body[left:right].split()) < 6 and len(lefts) > 1:
        left = lefts[-2]
    if left == 0 and right < len(body) and len(body[:right].split()) <= 4:  # "In 1990, X did Y" -> "X did Y in 1990"
        after = next((a for a, _ in marks if a > right), len(body))
        main = body[right + 1 : after].strip()
        if len(main.split()) >= 4:
            intro = body[:right].strip()
            main = _lower(main)
            text = f"{main} {intro[:1].lower()}{intro[1:]}"
            return text, len(main) + 1 + (start - 0), len(main) + 1 + end
    text = body[left:right].strip()
    shift = body.index(text, left) if text else left
    if (m := re.match(r"(?:and|but|or|so|yet) ", text)) and shift > 0:
        text, shift = text[m.end() :], shift + m.end()
        text = text[:1].upper() + text[1:]
    if len(text.split()) < 4 or len(text.split()) > 28:
        return None
    return text, start - shift, end - shift


_NAME_NEXT = re.compile(
    r"^(?:[,.;:!?)]|$| (?:is|was|are|were|has|had|have|in|on|at|of|for|to|with|from|by|which|who|that|said|wrote)\b)"
)
_YEAR_BEFORE = re.compile(r"\b(?:in|since|until|by|from|before|after|around|of|year|c\.)$", re.I)
_NUMBER_BEFORE = re.compile(
    rf"(?:\d|\b(?:{_NUMBER_WORDS}|one))\s*(?:to|or|and|-|–)$|\b(?:the|a|an|few|several)$", re.I
)  # half of a range, or a number that modifies ("a few hundred")
_VERBISH = set(
    "gives comes goes makes takes means seems does helps works lets needs runs keeps costs says gets".split()
)
_FRAGMENT = re.compile(
    r"^(?:or|and|but|if|with|after|before|for|while|such|as|than|when|where|because|which|who|"
    r"instead|almost|around|lasting|since|until|although|though|like|then|plus)\b",
    re.I,
)


def _fits(kind: str, before: str, after: str) -> bool:
    """Whether a span reads as an answer where it stands (not a list item, a modifier or half of a range)."""
    before = before.rstrip()
    if kind == "name":
        if not before or not (before.split()[-1][:1].islower() or before.endswith(",")):
            return False
        in_list = re.search(r"(?:,|\band|\bor)$", before) or re.match(r"^(?: and | or |, [A-Z])", after)
        return bool(_NAME_NEXT.match(after)) and not in_list
    if kind == "year":
        return bool(_YEAR_BEFORE.search(before))
    if kind in ("count", "percent", "money"):
        return not _NUMBER_BEFORE.search(before) and not (kind == "count" and after == "")
    return True


def _wh(kind: str, unit: str | None, before: str) -> str:
    if kind == "count":
        return f"how many {unit}"
    if kind == "name":
        if not before or not (before.split()[-1][:1].islower() or before.endswith(",")):
            return False
        return "whom" if before.endswith(" by") else "what"
    return _WH[kind]


def _front(clause: str, s: int, e: int, kind: str, wh: str, lead: bool) -> str | None:
    """A question with the wh-phrase in front, for the clause shapes this knows; None for others."""
    head, tail = clause[:s].rstrip(), clause[e:].strip()
    have = _HAVE.match(clause)
    if (
        kind == "count"
        and have
        and re.fullmatch(
            r"\s*(?:(?:about|around|over|nearly|roughly|some|only|more than)\s*)?", clause[have.end("v") : s]
        )
        and not tail
    ):
        m = have
        return f"{wh[0].upper()}{wh[1:]} {_HAVE_AUX[m['v']]} {_lower(m['s'])} {_HAVE_BASE[m['v']]}?"
    if kind in ("name",) and (m := _COPULA_END.match(head + " X")) and m["rest"] == "X" and not tail:
        return f"{'Who' if kind == 'name' else 'What'} {m['be']} {_lower(m['s'])}?"
    if (m := _PASSIVE.match(head)) and not tail and lead and kind in _LEAD:
        rest = m["rest"].strip()
        rest = re.sub(rf"\s*\b{_LEAD[kind]}$", "", rest).strip()
        word = "When" if kind in ("year", "date") else f"{_LEAD[kind].capitalize()} {wh}"
        verb = f"{m['v']} {rest}".strip()
        return f"{word} {m['be']} {_lower(m['s'])} {verb}?"
    if kind == "name" and (m := _PASSIVE.match(head)) and head.endswith(" by") and not tail:
        rest = m["rest"].strip()[: -len("by")].strip()
        return f"Who {m['be']} {_lower(m['s'])} {m['v']}{(' ' + rest) if rest else ''} by?"
    return None


def _lower(subject: str) -> str:
    """A sentence-initial subject as it reads mid-sentence ("The town" -> "the town"; names stay)."""
    first = subject.split(" ", 1)[0]
    return subject[:1].lower() + subject[1:] if first in _STOP_NAMES else subject


def _subject_title(sentence: str, title: str | None) -> str | None:
    """The sentence with a leading "Its"/"It" replaced by the passage title, or as it is; None when it opens with
    a pronoun the title cannot stand for (the question would not say what it is about)."""
    if not _PRONOUN_START.match(sentence):
        return sentence
    if title and len(title.split()) <= 5 and not title.endswith("?"):
        if sentence.startswith("Its "):
            return f"{title}'s {sentence[4:]}"
        if sentence.startswith("It ") and not sentence.startswith(("It is ", "It was ")):
            return f"{title} {sentence[3:]}"
    return None


def span_questions(passage: str, title: str | None = None, limit: int = 8) -> list[SpanQuestion]:
    """Questions whose answer is a short span of `passage` (checked: the span is in its sentence, the sentence in
    the passage), at most one per span, at most `limit`; deterministic."""
    out: list[SpanQuestion] = []
    seen: set[str] = set()
    for original in sentences(passage):
        if original not in passage:
            continue
        sent = _subject_title(original, title)
        if sent is None:
            continue
        taken: list[tuple[int, int]] = []
        for kind, pat in _SPANS:
            for m in pat.finditer(sent):
                s, e = m.start("a"), m.end("unit" if kind == "count" else "a")
                if any(s < b and a < e for a, b in taken) or (kind == "name" and m["a"] in _STOP_NAMES):
                    continue
                taken.append((s, e))
                if not _fits(kind, sent[:s], sent[e:]):
                    continue
                got = _clause(sent, s, e)
                if got is None:
                    continue
                clause, cs, ce = got
                before = clause[:cs].rstrip()
                lead = kind in _LEAD and before.endswith(" " + _LEAD[kind])
                if kind == "name" and before.endswith(" the"):  # "on the River Esk" -> "on what"
                    clause, cs = clause[: cs - 4] + clause[cs:], cs - 4
                    ce -= 4
                    before = clause[:cs].rstrip()
                wh = _wh(kind, m.groupdict().get("unit"), before)
                q = _front(clause, cs, ce, kind, wh, lead)
                if q is None:
                    q = f"{clause[:cs]}{wh}{clause[ce:]}?"
                answer = sent[s:e]
                if kind == "count" and answer.split()[-1] in _VERBISH or _FRAGMENT.match(clause.lstrip("'\"‘“ ")):
                    continue
                key = norm(q)
                if key in seen or norm(answer) not in norm(original) or norm(answer) in key:
                    continue
                seen.add(key)
                out.append(SpanQuestion(q[:1].upper() + q[1:], answer, original, kind))
                if len(out) >= limit:
                    return out
    return out
