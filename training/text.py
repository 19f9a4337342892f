"""Plain-text helpers shared by the fine-tuning data builders: a passage's sentences, text normalised for matching."""

from __future__ import annotations

import re

BRIEF_WORDS = 40  # a target answers in a sentence or two: at most this many words, whole sentences
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?![\s\"'”’)]|$))+[.!?]+(?=[\s\"'”’)]|$)")


def norm(text: str) -> str:
    """Lower-case, single-spaced text without trailing punctuation (for dedupe and span checks)."""
    return " ".join(text.lower().split()).strip(" .?!")


def sentences(text: str) -> list[str]:
    """The sentences of a passage, list bullets stripped."""
    out = []
    for line in text.splitlines():
        line = line.strip().lstrip("-*• ").strip()
        out += [m.group(0).strip() for m in _SENTENCE.finditer(line)]
    return [s for s in out if len(s.split()) >= 5]


def brief(text: str, max_words: int = BRIEF_WORDS) -> str:
    """The opening sentences of `text`, as many as fit `max_words` (at least one, cut at a word if it is long)."""
    out: list[str] = []
    for s in sentences(text) or [text.strip()]:
        if out and len(" ".join(out + [s]).split()) > max_words:
            break
        out.append(s)
    words = " ".join(out).split()
    return " ".join(words[:max_words]) + ("…" if len(words) > max_words else "")
