"""What the ask path returns: the answer with its sources, confidence, timings and (when asked) its prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag.consciousness import metacognition as meta
from rag.consciousness.memory import Memory
from rag.consciousness.workspace import Workspace


@dataclass
class Source:
    """An exemplar that was in the prompt; `number` is how the answer cites it, `used` whether it did."""

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

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "score": round(self.score, 4),
            "prompt": self.prompt,
            "number": self.number,
            "used": self.used,
            "dense_rank": self.dense_rank,
            "lexical_rank": self.lexical_rank,
            "fused_score": None if self.fused_score is None else round(self.fused_score, 4),
        }
        if self.category:
            d["category"] = self.category
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
