"""Plain-text helpers shared by the fine-tuning data builders: a passage's sentences, text normalised for matching."""

from __future__ import annotations

import re

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
