"""What competes for the prompt: the retrieved records, memories, recent turns and self-model facts as workspace
candidates, each with its salience; the sentences of a passage a small model is given; and the layer's own words
when no passage passes the evidence gate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import numpy as np

from index.retrieve import Hit
from rag.consciousness.focus import focus
from rag.consciousness.memory import Memory
from rag.consciousness.prompt import exemplar_text, memory_text, passage_text
from rag.consciousness.selfmodel import SelfModel
from rag.consciousness.workspace import Candidate, shorten


def normalise_history(history: list[Any] | None) -> list[dict[str, str]]:
    """Turns as role/content dicts; accepts dicts, (role, content) pairs and langchain messages."""
    out = []
    for t in history or []:
        if isinstance(t, dict):
            role, content = t.get("role", "user"), t.get("content", "")
        elif isinstance(t, tuple | list):
            role, content = t[0], t[1]
        else:
            role, content = {"human": "user", "ai": "assistant"}.get(t.type, t.type), str(t.content)
        if role in ("user", "assistant") and content:
            out.append({"role": role, "content": str(content)})
    return out


def hit_text(h: Hit, body: str) -> str:
    """How a retrieved record reads in the prompt: a document passage under its title, a pair as Q and A."""
    return passage_text(h.prompt, body) if h.metadata.get("kind") == "text" else exemplar_text(h.prompt, body)


def focus_exemplars(
    cands: list[Candidate], question: str, vector: np.ndarray | None, embed: Callable[[str], np.ndarray] | None
) -> None:
    """Cut each document passage down to the sentences that answer `question` (a small model reads and copies
    those, not the whole passage); the chosen text is kept in `meta["focus"]` for copying."""
    many = (lambda parts: np.stack([embed(p) for p in parts])) if embed is not None and vector is not None else None
    for c in cands:
        if c.kind != "exemplar" or c.meta["hit"].metadata.get("kind") != "text":
            continue  # a pair's answer answers a similar question whole; a passage holds more than the question needs
        h = c.meta["hit"]
        text, _ = focus(question, h.response, embed=many, query_vector=vector)
        c.text, c.meta["focus"] = hit_text(h, text), text


def preface(hits: list[Hit], has_corpus: bool) -> str:
    """What the layer says before a model answers without references: that the documents do not answer it,
    naming the closest passage, and that what follows is the model's own unverified knowledge."""
    if hits:
        h = hits[0]
        name = PurePath(h.metadata.get("source") or "").name
        title = " ".join(h.prompt.split())[:80]
        seen = f"the closest is \u201c{title}\u201d" + (f" in {name}" if name else "") + f", similarity {h.score:.2f}"
        lead = f"I could not find this in your documents ({seen})."
    else:
        lead = "I could not find this in your documents." if has_corpus else "You have no documents yet."
    return lead + " From general knowledge, unverified: "


def candidates(
    self_model: SelfModel,
    hits: list[Hit],
    memories: list[Memory],
    turns: list[dict[str, str]],
    now: float,
    exemplar_bytes: int | None = None,
) -> list[Candidate]:
    """Everything that competes for the prompt, each with its salience: self-model facts are pinned; an
    exemplar's salience is its similarity, a memory's its recall score, a turn's falls with the age of its exchange."""
    out = [Candidate(kind="self", text=text, salience=1.0, id=label, pinned=True) for label, text in self_model.facts()]
    for h in hits:
        out.append(
            Candidate(
                kind="exemplar",
                text=hit_text(h, shorten(h.response, exemplar_bytes, mark="") if exemplar_bytes else h.response),
                salience=h.score,
                id=h.id,
                truncatable=True,
                meta={"hit": h, "scores": {"similarity": h.score}},
            )
        )
    for m in memories:
        out.append(
            Candidate(
                kind=m.kind if m.kind == "reflection" else "memory",
                text=memory_text(m.kind, m.age(now), m.text),
                salience=m.score or 0.0,
                id=m.id,
                truncatable=True,
                meta={
                    "memory": m,
                    "scores": {
                        "recency": m.recency or 0.0,
                        "importance": m.importance,
                        "relevance": m.relevance or 0.0,
                    },
                },
            )
        )
    n = len(turns)
    for i, t in enumerate(turns):
        age = (n - 1 - i) // 2  # in exchanges, 0 for the latest: a question and its answer compete as one
        out.append(
            Candidate(
                kind="turn",
                text=t["content"],
                salience=0.95 * 0.9**age,
                id=f"turn-{i}",
                truncatable=True,
                meta={"role": t["role"], "index": i},
            )
        )
    return out
