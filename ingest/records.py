"""The corpus record and its content-hash id."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFC, whitespace runs folded to one space, ends stripped: what counts as 'the same text'."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def content_hash(*parts: str) -> str:
    """A 128-bit hex digest of the normalised parts; stable across runs, machines and Python versions."""
    h = hashlib.sha256()
    for p in parts:
        h.update(normalise(p).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Record:
    """One prompt/response pair (or a text chunk, whose prompt is its heading) and where it came from.

    Frozen, so the content ids computed once stay true."""

    prompt: str
    response: str
    model: str | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    source: str = ""
    line: int = 0
    kind: str = "pair"  # "pair" or "text"

    @cached_property
    def id(self) -> str:
        """Content id: re-ingesting the same pair adds nothing, an edited pair gets a new id."""
        return content_hash(self.prompt, self.response)

    @cached_property
    def key(self) -> str:
        """Slot id: the same prompt from the same source, so an edited response replaces the old one."""
        return content_hash(self.source, self.prompt)

    def embed_text(self, field_: str = "prompt") -> str:
        """The text embedded for this record; text chunks always embed heading and body together."""
        if self.kind == "text" or field_ == "both":
            return f"{self.prompt}\n{self.response}"
        return self.response if field_ == "response" else self.prompt

    def to_json(self) -> dict[str, Any]:
        """The corpus JSONL shape."""
        out: dict[str, Any] = {"prompt": self.prompt, "response": self.response}
        for name in ("model", "category", "split"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.meta:
            out["meta"] = self.meta
        return out
