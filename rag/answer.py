"""What the ask path returns: the answer with its sources, confidence, timings and (when asked) its prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from rag.consciousness import metacognition as meta
from rag.consciousness.memory import Memory
from rag.consciousness.workspace import Workspace


def place(file: str, heading: str | None = None, page: int | None = None) -> str:
    """Where a source is, in words: "ferry_manual.pdf, page 2", "bike_log.md: Bike log > Tyres" ("" if unknown)."""
    if not file:
        return heading or ""
    out = PurePath(file).name + (f", page {page}" if page else "")
    return f"{out}: {heading}" if heading else out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Source:
    """An exemplar that was in the prompt; `number` is how the answer cites it, `used` whether it did.

    `file` is the file it came from, `heading` its heading path, `page` its page (PDF page, slide), `start` and
    `end` its character span in the file's text (in the converted Markdown of a document, of its page for a PDF);
    None where unknown (a whole corpus record has no heading or span)."""

    id: str
    score: float
    prompt: str
    number: int = 0
    used: bool = False
    response: str = field(default="", repr=False)
    category: str = ""
    dense_rank: int | None = None  # which retriever found it: its rank in each list (None: not in that list)
    lexical_rank: int | None = None
    fused_score: float | None = None
    file: str = ""
    heading: str | None = None
    page: int | None = None
    start: int | None = None
    end: int | None = None
    quote: str | None = None  # the sentence an extractive answer was taken from

    @classmethod
    def place_fields(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        """file, heading, page, start and end from a stored record's metadata."""
        heading = metadata.get("heading")
        return {
            "file": str(metadata.get("source") or ""),
            "heading": heading if isinstance(heading, str) and heading else None,
            "page": _int(metadata.get("page")),
            "start": _int(metadata.get("start")),
            "end": _int(metadata.get("end")),
        }

    @property
    def where(self) -> str:
        """File, page and heading path in words (see `place`)."""
        return place(self.file, self.heading, self.page)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "score": round(self.score, 4),
            "prompt": self.prompt,
            "number": self.number,
            "used": self.used,
            "file": self.file,
            "heading": self.heading,
            "page": self.page,
            "start": self.start,
            "end": self.end,
            "where": self.where,
            "dense_rank": self.dense_rank,
            "lexical_rank": self.lexical_rank,
            "fused_score": None if self.fused_score is None else round(self.fused_score, 4),
        }
        if self.category:
            d["category"] = self.category
        if self.quote:
            d["quote"] = self.quote
        return d


@dataclass
class Answer:
    """What `ask` returns. `timings` are milliseconds: retrieve, generate, memory, total."""

    answer: str
    sources: list[Source]
    confidence: float
    low_confidence: bool
    backend: str
    model: str
    timings: dict[str, float]
    prompt: str | None = None  # the flattened prompt, when asked for
    workspace: Workspace | None = None
    messages: list[dict[str, str]] | None = None
    memories: list[Memory] = field(default_factory=list)  # recalled for this question
    session: str | None = None
    done_reason: str = "stop"
    details: meta.Confidence | None = None
    warnings: list[str] = field(default_factory=list)
    reflections: list[Memory] = field(default_factory=list)  # written after this exchange, if any
    # True only when a source in the prompt holds the answer: the whole answer, or at least
    # rag.consciousness.calibration.SUPPORTED of its content words (never with no sources, never for "I don't know").
    grounded: bool = False

    def to_dict(self, show_prompt: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "answer": self.answer,
            "sources": [s.to_dict() for s in self.sources],
            "confidence": round(self.confidence, 4),
            "low_confidence": self.low_confidence,
            "grounded": self.grounded,
            "backend": self.backend,
            "model": self.model,
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            "session": self.session,
            "done_reason": self.done_reason,
            "memories": [m.to_dict() for m in self.memories],
        }
        if self.details is not None:
            d["confidence_details"] = self.details.to_dict()
        if self.warnings:
            d["warnings"] = self.warnings
        if show_prompt:
            d["prompt"] = self.prompt
            d["messages"] = self.messages
            d["workspace"] = self.workspace.to_dict() if self.workspace else None
        return d
