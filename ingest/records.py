"""The corpus record and its content-hash id."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
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


HELDOUT = "heldout"  # the split that is the evaluation set: never trained on, never retrieved to ground an answer
HELDOUT_FRACTION = 0.1  # share of records held out by hash when no record is marked


def split_name(value: Any) -> str | None:
    """A record's split as stored: lower-case and trimmed, so "Heldout" and "heldout " are the held-out split."""
    return value.strip().lower() or None if isinstance(value, str) else None


def heldout_flags(records: Sequence[Any], fraction: float = HELDOUT_FRACTION, seed: int = 0) -> tuple[list[bool], str]:
    """The one held-out rule, shared by training and evaluation: (flag per record, the rule in words).

    Records whose `split` is "heldout" in any letter case are held out; when none is, `fraction` of them
    (at least one, never all) is chosen by a stable hash of the record id."""
    marked = [split_name(getattr(r, "split", None)) == HELDOUT for r in records]
    if any(marked):
        return marked, f"records whose split is {HELDOUT!r}"
    n = len(records)
    if n < 2 or fraction <= 0:
        return marked, f"no record has split {HELDOUT!r}"
    n_held = min(max(1, round(fraction * n)), n - 1)

    def rank(r: Any) -> bytes:
        return hashlib.blake2b(f"{seed}\x1fheldout\x1f{r.id}".encode(), digest_size=8).digest()

    chosen = {id(r) for r in sorted(records, key=rank)[:n_held]}
    return [id(r) in chosen for r in records], f"{n_held} of {n} records by a stable hash of their id"
