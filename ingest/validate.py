"""Validation: reject what poisoned the earlier attempt (empty, placeholder, echo, oversize records)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from ingest.records import Record, normalise

MAX_RESPONSE_BYTES = 32_768
MAX_PROMPT_BYTES = 16_384

_PLACEHOLDERS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"\{\{?\s*(response|answer|output|completion|text|content|placeholder|insert[^}]*)\s*\}?\}", re.I),
        "template variable",
    ),
    (re.compile(r"<\s*(placeholder|response|answer|insert[^>]*|your [^>]*)\s*/?>", re.I), "placeholder tag"),
    (re.compile(r"\[\s*(insert|placeholder|your|add|fill in)\b[^\]]*\]", re.I), "bracketed fill-in"),
    (re.compile(r"\bTODO\b|\bFIXME\b|\bTBD\b"), "TODO marker"),
    (re.compile(r"lorem ipsum", re.I), "Lorem ipsum"),
]


@dataclass
class Rejection:
    """A record that was not ingested, with where it was and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def find_placeholder(text: str) -> str | None:
    """The first template placeholder in `text`, described, or None."""
    for pattern, what in _PLACEHOLDERS:
        m = pattern.search(text)
        if m:
            return f"{what} {m.group(0)!r}"
    return None


def is_echo(prompt: str, response: str) -> bool:
    """True when the response only repeats the prompt (exactly, contained in it, or nearly so)."""
    p, r = normalise(prompt).lower(), normalise(response).lower()
    if not r or r == p or r in p:
        return True
    if r.startswith(p) and len(r) - len(p) < 16:
        return True
    return len(r) <= 2 * len(p) and SequenceMatcher(None, p, r, autojunk=False).ratio() > 0.9


def check_record(
    rec: Record, *, max_response_bytes: int = MAX_RESPONSE_BYTES, max_prompt_bytes: int = MAX_PROMPT_BYTES
) -> str | None:
    """The reason `rec` must be rejected, or None when it is fine."""
    if not isinstance(rec.prompt, str) or not rec.prompt.strip():
        return "empty prompt"
    if not isinstance(rec.response, str) or not rec.response.strip():
        return "empty or whitespace-only response"
    for name, text in (("response", rec.response), ("prompt", rec.prompt)):
        found = find_placeholder(text)
        if found:
            return f"placeholder in {name}: {found}; write the real text"
        if "\ufffd" in text:
            return f"{name} holds U+FFFD replacement characters (text that was not valid UTF-8 upstream)"
    if rec.kind == "pair" and is_echo(rec.prompt, rec.response):
        return "response only echoes the prompt"
    rb, pb = len(rec.response.encode("utf-8")), len(rec.prompt.encode("utf-8"))
    if rb > max_response_bytes:
        return f"oversize: response is {rb} bytes (limit {max_response_bytes}); split it or raise the limit"
    if pb > max_prompt_bytes:
        return f"oversize: prompt is {pb} bytes (limit {max_prompt_bytes})"
    return None
