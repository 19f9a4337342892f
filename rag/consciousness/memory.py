"""The memory stream (after Park et al., 2023, Generative Agents), one Chroma collection per session.

Every exchange is stored with a timestamp and an importance score. Recall ranks by a weighted sum of
recency (exponential decay per hour since the memory was last recalled), importance and relevance (cosine
similarity to the question); the weights come from [memory]. Every N exchanges a reflection condenses the
recent memories into a few higher-level statements through the backend; they are stored back with
kind="reflection". Memories live in the same store as the corpus, so they persist across processes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index.embed import Embedder
from index.lock import query_fresh, store_write_lock
from index.store import StoreError, get_collection
from rag.config import MemorySettings
from rag.consciousness.prompt import parse_reflections, reflection_messages
from rag.consciousness.session_names import PREFIX, collection_name, find_collection, new_collection_name, sessions

KINDS = ("exchange", "reflection", "note")
__all__ = ["PREFIX", "Memory", "MemoryStoreError", "MemoryStream", "collection_name", "importance", "sessions"]
ANSWER_CLIP = 500  # characters of an answer kept in its exchange memory


class MemoryStoreError(StoreError):
    """A memory id or session that does not exist, or an ambiguous id prefix."""


@dataclass
class Memory:
    """One memory. Recall fills `relevance`, `recency` and `score` (all in [0, 1])."""

    id: str
    session: str
    kind: str
    text: str
    created: float  # unix seconds
    accessed: float
    importance: float
    sources: list[str] = field(default_factory=list)  # reflections: ids of the memories they condense
    relevance: float | None = None
    recency: float | None = None
    score: float | None = None

    def age(self, now: float | None = None) -> str:
        """'just now', '5 minutes ago', '3 days ago'."""
        secs = max(0.0, (now or time.time()) - self.created)
        for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if secs >= n:
                k = int(secs // n)
                return f"{k} {unit}{'s' if k > 1 else ''} ago"
        return "just now"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "session": self.session,
            "kind": self.kind,
            "text": self.text,
            "created": round(self.created, 3),
            "accessed": round(self.accessed, 3),
            "importance": round(self.importance, 4),
        }
        if self.sources:
            d["sources"] = self.sources
        for name in ("relevance", "recency", "score"):
            value = getattr(self, name)
            if value is not None:
                d[name] = round(value, 4)
        return d


# ---------------------------------------------------------------------------------------------------------
# Importance


_CUES = re.compile(
    r"\b(remember|don't forget|do not forget|note that|keep in mind|important|always|never|from now on|"
    r"promise|deadline|allergic|birthday)\b",
    re.I,
)
_PERSONAL = re.compile(
    r"\b(my|mine|i am|i'm|i have|i've|i live|i work|i like|i love|i hate|i prefer|i want|i need|call me|"
    r"we are|we're|our)\b",
    re.I,
)
_SMALL_TALK = re.compile(r"^\W*(hi|hello|hey|thanks|thank you|ok|okay|bye|good (morning|night))\W*$", re.I)


def importance(question: str, answer: str = "") -> float:
    """A cheap poignancy score in [0, 1] (Park et al. ask the model; this needs no call): explicit cues to
    remember, personal facts, names and numbers raise it, small talk lowers it."""
    score = 0.3
    if _CUES.search(question):
        score += 0.3
    if _PERSONAL.search(question):
        score += 0.2
    words = question.split()
    if any(w[:1].isupper() for w in words[1:]) or any(ch.isdigit() for ch in question):
        score += 0.1
    if _SMALL_TALK.match(question.strip()):
        score -= 0.25
    if len(words) > 25:
        score += 0.05
    return float(min(1.0, max(0.05, score)))


def exchange_text(question: str, answer: str) -> str:
    """How an exchange is remembered (and embedded)."""
    answer = " ".join(answer.split())
    if len(answer) > ANSWER_CLIP:
        answer = answer[:ANSWER_CLIP].rsplit(" ", 1)[0] + " …"
    return f"The user said: {' '.join(question.split())}\nI answered: {answer}"


# ---------------------------------------------------------------------------------------------------------
# The stream


class MemoryStream:
    """The memories of one session. `embedder` may be an Embedder or a function that loads one on demand."""

    def __init__(
        self,
        client: Any,
        session: str,
        embedder: Embedder | Callable[[], Embedder],
        settings: MemorySettings | None = None,
        *,
        model: str | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.name = collection_name(session)
        self.settings = settings or MemorySettings()
        self._embedder = embedder
        self._model = model
        self._col: Any = None

    # -- plumbing ---------------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if not isinstance(self._embedder, Embedder):
            self._embedder = self._embedder()
        return self._embedder

    def _model_name(self) -> str:
        return self._model or self.embedder.name

    def collection(self, create: bool = False) -> Any | None:
        """The session's collection; None when it does not exist and `create` is False."""
        if self._col is not None:
            return self._col
        found = find_collection(self.client, self.session)  # this name, or the one an older store gave it
        if found is not None:
            self.name = found
            self._col = get_collection(self.client, found, model=self._model_name(), dim=None, create=False)
        else:
            if not create:
                return None
            self.name = new_collection_name(self.client, self.session)
            self._col = get_collection(
                self.client,
                self.name,
                model=self._model_name(),
                dim=self.embedder.dim,
                create=True,
                extra={"kind": "memory", "session": self.session, "last_reflection": 0.0},
            )
        return self._col

    def count(self) -> int:
        col = self.collection()
        return col.count() if col is not None else 0

    # -- writing ----------------------------------------------------------------------------------------
    def add(
        self,
        text: str,
        *,
        kind: str = "note",
        importance_score: float | None = None,
        vector: np.ndarray | None = None,
        sources: list[str] | None = None,
        now: float | None = None,
    ) -> Memory:
        """Store one memory (embedding `text` unless `vector` is given)."""
        if kind not in KINDS:
            raise MemoryStoreError(f"memory kind must be one of {', '.join(KINDS)}, not {kind!r}")
        return self.add_many(
            [text], kind=kind, importances=[importance_score], vectors=vector, sources=sources, now=now
        )[0]

    def add_many(
        self,
        texts: list[str],
        *,
        kind: str,
        importances: list[float | None] | None = None,
        vectors: np.ndarray | None = None,
        sources: list[str] | None = None,
        now: float | None = None,
        times: list[float] | None = None,
    ) -> list[Memory]:
        """Store several memories of one kind in one write (`times`: a creation time for each, else `now`)."""
        if not texts:
            return []
        now = time.time() if now is None else now
        stamps = times or [now] * len(texts)
        vecs = self.embedder.embed(texts) if vectors is None else np.atleast_2d(np.asarray(vectors, np.float32))
        imps = importances or [None] * len(texts)
        mems = [
            Memory(
                id=uuid.uuid4().hex,
                session=self.session,
                kind=kind,
                text=t,
                created=at,
                accessed=at,
                importance=float(importance(t) if imp is None else imp),
                sources=list(sources or []),
            )
            for t, imp, at in zip(texts, imps, stamps, strict=True)
        ]
        with store_write_lock(self.client, "memory"):
            self.collection(create=True).add(
                ids=[m.id for m in mems],
                embeddings=vecs.tolist(),
                documents=[m.text for m in mems],
                metadatas=[_meta(m) for m in mems],
            )
        return mems

    def add_exchange(
        self, question: str, answer: str, *, vector: np.ndarray | None = None, now: float | None = None
    ) -> Memory:
        """Remember one question and answer; `vector` may be the question's embedding to skip a model call."""
        text = exchange_text(question, answer)
        return self.add(text, kind="exchange", importance_score=importance(question, answer), vector=vector, now=now)

    def touch(self, ids: list[str], now: float | None = None) -> None:
        """Mark memories as recalled now (recency counts from the last access, as in Park et al.)."""
        col = self.collection()
        if col is not None and ids:
            now = time.time() if now is None else now
            with store_write_lock(self.client, "memory"):
                col.update(ids=list(ids), metadatas=[{"accessed": now} for _ in ids])

    # -- reading ----------------------------------------------------------------------------------------
    def recall(
        self,
        query: str | None = None,
        *,
        vector: np.ndarray | None = None,
        k: int | None = None,
        now: float | None = None,
        kinds: tuple[str, ...] | None = None,
        min_relevance: float | None = None,
    ) -> list[Memory]:
        """The k memories with the highest alpha*recency + beta*importance + gamma*relevance, best first.

        Candidates are the most relevant `max(5k, 20)` memories (one Chroma query); the score is the weighted
        mean of the three components, each in [0, 1], so it is comparable to a similarity.
        """
        s = self.settings
        k = s.recall_k if k is None else k
        col = self.collection()
        if col is None or k <= 0:
            return []
        if vector is None:
            if query is None:
                raise ValueError("recall needs a query or a vector")
            vector = self.embedder.embed_query(query)
        where = None
        if kinds:
            where = {"kind": kinds[0]} if len(kinds) == 1 else {"kind": {"$in": list(kinds)}}
        res = query_fresh(
            col,
            query_embeddings=[np.asarray(vector, np.float32).tolist()],
            n_results=max(5 * k, 20),  # Chroma returns fewer when it holds fewer
            where=where,
            include=["distances", "metadatas", "documents"],
        )
        now = time.time() if now is None else now
        floor = s.min_relevance if min_relevance is None else min_relevance
        weights = (s.recency_weight, s.importance_weight, s.relevance_weight)
        wsum = sum(weights) or 1.0
        out = []
        for id_, dist, meta, doc in zip(
            res["ids"][0], res["distances"][0], res["metadatas"][0], res["documents"][0], strict=True
        ):
            m = _from_meta(id_, meta or {}, doc or "", self.session)
            m.relevance = float(min(1.0, max(0.0, 1.0 - dist)))
            if m.relevance < floor:
                continue
            hours = max(0.0, now - m.accessed) / 3600.0
            m.recency = float(s.decay_per_hour**hours)
            m.score = (weights[0] * m.recency + weights[1] * m.importance + weights[2] * m.relevance) / wsum
            out.append(m)
        out.sort(key=lambda m: -(m.score or 0.0))
        return out[:k]

    def search(self, query: str, k: int = 10) -> list[Memory]:
        """Memories for `query`, ranked as recall ranks them (no relevance floor)."""
        return self.recall(query, k=k, min_relevance=0.0)

    def list(self, kind: str | None = None, limit: int | None = None) -> list[Memory]:
        """All memories (or those of one kind), oldest first; `limit` keeps the newest."""
        col = self.collection()
        if col is None:
            return []
        got = col.get(where={"kind": kind} if kind else None, include=["metadatas", "documents"])
        mems = [
            _from_meta(i, m or {}, d or "", self.session)
            for i, m, d in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
        ]
        mems.sort(key=lambda m: (m.created, m.id))
        return mems[-limit:] if limit else mems

    def resolve(self, ids: list[str]) -> list[str]:
        """Full ids for full ids or unique prefixes; a missing or ambiguous one is an error."""
        col = self.collection()
        known = col.get(include=[])["ids"] if col is not None else []
        out = []
        for ref in ids:
            hits = [i for i in known if i == ref] or [i for i in known if i.startswith(ref)]
            if not hits:
                raise MemoryStoreError(f"no memory {ref!r} in session {self.session!r} (see `shvayambhu memory list`)")
            if len(hits) > 1:
                raise MemoryStoreError(
                    f"memory id prefix {ref!r} is ambiguous in session {self.session!r}: "
                    f"{len(hits)} memories start with it"
                )
            out.append(hits[0])
        return out

    def forget(self, ids: list[str]) -> int:
        """Delete memories by id or unique id prefix; returns how many."""
        full = self.resolve(ids)
        if full:
            with store_write_lock(self.client, "forget"):
                self.collection().delete(ids=full)
        return len(full)

    def clear(self) -> int:
        """Delete every memory of the session (its collection); returns how many there were."""
        col = self.collection()
        if col is None:
            return 0
        n = col.count()
        with store_write_lock(self.client, "clear"):
            self.client.delete_collection(self.name)
        self._col = None
        return n

    # -- reflection -------------------------------------------------------------------------------------
    def last_reflection(self) -> float:
        col = self.collection()
        return float((col.metadata or {}).get("last_reflection", 0.0)) if col is not None else 0.0

    def since_reflection(self) -> list[Memory]:
        """Exchanges stored after the last reflection, oldest first."""
        col = self.collection()
        if col is None:
            return []
        got = col.get(
            where={"$and": [{"kind": "exchange"}, {"created": {"$gt": self.last_reflection()}}]},
            include=["metadatas", "documents"],
        )
        mems = [
            _from_meta(i, m or {}, d or "", self.session)
            for i, m, d in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
        ]
        return sorted(mems, key=lambda m: m.created)

    def reflection_due(self) -> bool:
        every = self.settings.reflect_every
        return every > 0 and len(self.since_reflection()) >= every

    def reflect(self, generate: Callable[[list[dict[str, str]]], str], now: float | None = None) -> list[Memory]:
        """Condense the exchanges since the last reflection into statements through `generate` (chat messages
        in, text out) and store them as kind="reflection"; marks the time even when nothing came back."""

        recent = self.since_reflection()
        if not recent:
            return []
        now = time.time() if now is None else now
        text = generate(reflection_messages([m.text for m in recent], self.settings.reflection_size))
        statements = parse_reflections(text, self.settings.reflection_size)
        top = max(m.importance for m in recent)
        mems = (
            self.add_many(
                statements,
                kind="reflection",
                importances=[max(0.7, top)] * len(statements),
                sources=[m.id for m in recent],
                now=now,
            )
            if statements
            else []
        )
        col = self.collection()
        with store_write_lock(self.client, "memory"):
            col.modify(metadata={**(col.metadata or {}), "last_reflection": now})
        return mems


def _meta(m: Memory) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "kind": m.kind,
        "session": m.session,
        "created": m.created,
        "accessed": m.accessed,
        "importance": m.importance,
    }
    if m.sources:
        meta["sources"] = ",".join(m.sources)
    return meta


def _from_meta(id_: str, meta: dict[str, Any], doc: str, session: str) -> Memory:
    created = float(meta.get("created", 0.0))
    src = str(meta.get("sources", ""))
    return Memory(
        id=id_,
        session=str(meta.get("session", session)),
        kind=str(meta.get("kind", "note")),
        text=doc,
        created=created,
        accessed=float(meta.get("accessed", created)),
        importance=float(meta.get("importance", 0.3)),
        sources=[s for s in src.split(",") if s],
    )
