"""The Python API: `Shvayambhu(settings)` ingests, searches and answers; the CLI is a thin layer over it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blt.blas import enable_openblas
from index.chroma_compat import collection_names
from index.doctor import check, repair
from index.embed import Embedder, EmbeddingError, canonical_name, choose_precision, load_embedder
from index.errors import UsageError
from index.fusion import FusionOptions
from index.lexical import STALE_NOTE, LexicalStore
from index.lock import store_write_lock
from index.retrieve import Hit, search
from index.store import (
    DiskFull,
    StoreError,
    collection_info,
    collection_precision,
    explain,
    get_collection,
    open_client,
    reopen_after_failure,
)
from ingest.pipeline import IngestSummary, ingest_paths
from ingest.readers import iter_files
from rag.answer import Answer
from rag.backends.base import Backend, BackendError
from rag.backends.select import backend_status, select_backend
from rag.config import Settings, load_settings
from rag.consciousness import calibration as cal
from rag.consciousness import metacognition as meta
from rag.consciousness.memory import MemoryStream
from rag.consciousness.memory import sessions as stored_sessions
from rag.consciousness.selfmodel import SelfModel
from rag.pipeline import AnswerStream, Prepared, prepare, run

# References measured in this process, by (collection id, count, model, precision): a copy of a store reuses one.
_REFERENCES: dict[tuple[str, int, str, str], cal.Reference] = {}


class Shvayambhu:
    """One assistant over one store. Heavy parts (client, embedding model) load on first use."""

    def __init__(self, settings: Settings | None = None, **overrides: Any):
        self.settings = settings or load_settings(overrides=overrides or None)
        enable_openblas(verbose=False)  # OpenBLAS under MLX on Linux CPUs; must come before mlx is imported
        self._memories: dict[str, MemoryStream] = {}
        self._backends: dict[tuple[str, str | None], Backend] = {}
        self._corpus: Any | None = None
        self._lexical: dict[str, LexicalStore] = {}
        self._calibration: dict[str, tuple[cal.Reference | None, cal.Weights | None]] = {}
        self._lock = threading.RLock()  # a server shares one assistant between threads
        self._client: Any | None = None
        self._embedder: Embedder | None = None
        self._client_lock = threading.Lock()
        self._failed_on_full_disk = False  # Chroma's system may hang the next write: reopen before it
        self._embedder_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The store's Chroma client, opened on first use: once, whichever of a server's threads comes first."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    s = self.settings.store
                    self._client = open_client(self.settings.data_dir, host=s.chroma_host or None, port=s.chroma_port)
        return self._client

    @property
    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use: once, whichever of a server's threads comes first."""
        if self._embedder is None:
            with self._embedder_lock:  # takes the client's lock inside (precision reads the corpus), never around
                if self._embedder is None:
                    self._embedder = self._load_embedder()
        return self._embedder

    def _load_embedder(self) -> Embedder:
        emb = self.settings.embedding
        precision = self.precision()
        try:
            return load_embedder(emb.model, emb.device, emb.runtime, precision)
        except EmbeddingError:
            if emb.precision != "auto" or precision == "fp32":
                raise
            return load_embedder(emb.model, emb.device, emb.runtime, "fp32")  # auto: int8 needs ONNX Runtime

    def precision(self) -> str:
        """The embedding precision: the configured one or, with `auto`, the corpus collection's (int8 if new)."""
        emb = self.settings.embedding
        built = None
        if emb.precision == "auto":
            try:
                built = collection_precision(self.collection())
            except StoreError:  # no corpus yet
                pass
        return choose_precision(emb.precision, built, emb.runtime, emb.device)

    def collection(self, create: bool = False, name: str | None = None) -> Any:
        """The corpus collection, checked against the configured embedding model and field."""
        emb, name = self.settings.embedding, name or self.settings.store.collection
        model = canonical_name(emb.model)
        try:  # opening an existing collection needs no model load: re-ingest and status stay fast
            return get_collection(self.client, name, model=model, dim=None, embed_field=emb.embed_field, create=False)
        except StoreError:
            if not create or name in {c["name"] for c in collection_info(self.client)}:
                raise
        return get_collection(
            self.client,
            name,
            model=model,
            dim=self.embedder.dim,
            embed_field=emb.embed_field,
            create=True,
            precision=self.embedder.precision,
        )

    def lexical(self, collection: Any | None = None) -> LexicalStore:
        """The BM25 index kept beside `collection` (default: the corpus) in the data directory."""
        col = collection if collection is not None else self.collection()
        with self._lock:
            key = getattr(col, "id", None) or col.name
            if key not in self._lexical:
                show = sys.stderr.isatty()  # a rebuild of a large index shows a progress bar
                self._lexical[key] = LexicalStore.for_collection(self.settings.data_dir, col, show_progress=show)
            return self._lexical[key]

    def fusion(self) -> FusionOptions:
        """How hybrid retrieval fuses its two rankings, from [retrieval]."""
        r = self.settings.retrieval
        return FusionOptions(method=r.fusion, rrf_k=r.rrf_k, alpha=r.alpha)

    def ingest(
        self,
        paths: Iterable[str | Path],
        *,
        prune: bool = False,
        strict: bool = False,
        progress: bool | None = None,
        wait: bool = True,
        verify: bool = False,
    ) -> IngestSummary:
        """Read, validate, embed and store `paths` (files or folders) under the store's write lock (`wait=False`:
        fail at once when another process writes); `verify` re-embeds records whose vector cannot be read.
        See `ingest.pipeline.ingest_paths`."""
        paths = list(paths)
        list(iter_files(paths))  # a missing path fails before anything is created
        if self._failed_on_full_disk:  # reads went on with the old system; the next write gets a fresh one
            self._reopen_store()
        try:
            return self._ingest(paths, prune=prune, strict=strict, progress=progress, wait=wait, verify=verify)
        except Exception as e:
            if isinstance(e, DiskFull) or isinstance(explain(e), DiskFull):
                self._failed_on_full_disk = True
            raise

    def _reopen_store(self) -> None:
        """Open the embedded store afresh on next use (see `index.store.reopen_after_failure`)."""
        self._failed_on_full_disk = False
        if self.settings.store.chroma_host:
            return
        with self._client_lock, self._lock:
            reopen_after_failure(self.settings.data_dir)
            self._client, self._corpus = None, None
            self._memories.clear()
            self._lexical.clear()

    def _ingest(
        self, paths: list[str | Path], *, prune: bool, strict: bool, progress: bool | None, wait: bool, verify: bool
    ) -> IngestSummary:
        return ingest_paths(
            paths,
            lambda: self.collection(create=True),  # created only once the input is known to be good
            lambda: self.embedder,
            lexical=self.lexical,
            embed_field=self.settings.embedding.embed_field,
            prune=prune,
            strict=strict,
            progress=progress,
            wait=wait,
            verify=verify,
        )

    def check(self) -> list[str]:
        """Ids of corpus records whose vector cannot be read (see `repair`)."""
        return check(self.collection())

    def repair(self, wait: bool = True) -> int:
        """Re-embed, from their stored text, the corpus records whose vector cannot be read; returns how many."""
        col = self.collection()
        with store_write_lock(col, "repair", wait=wait):
            return repair(col, self.embedder)

    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        where: dict[str, Any] | None = None,
        mmr: bool | None = None,
        min_score: float | None = None,
        mode: str | None = None,
    ) -> list[Hit]:
        """Top-k exemplars for `query` (MMR-diversified when asked), best first; `mode` is dense, hybrid or
        lexical ([retrieval] mode by default)."""
        r = self.settings.retrieval
        mode = mode or r.mode
        col = self.collection()
        return search(
            col,
            self.embedder,
            query,
            k=k or r.k,
            where=where,
            min_score=r.min_score if min_score is None else min_score,
            mmr=r.mmr if mmr is None else mmr,
            fetch_k=r.fetch_k,
            mmr_lambda=r.mmr_lambda,
            mode=mode,
            lexical=self.lexical(col) if mode != "dense" else None,
            fusion=self.fusion(),
        )

    def status(self) -> dict[str, Any]:
        """Where the store is, which collections it holds and with which embedding model."""
        s = self.settings.store
        where = f"server {s.chroma_host}:{s.chroma_port}" if s.chroma_host else f"embedded {self.settings.data_dir}"
        return {
            "store": where,
            "data_dir": str(self.settings.data_dir),
            "embedding_model": self.settings.embedding.model,
            "collections": collection_info(self.client),
            "backends": backend_status(self.settings),
        }

    # -- the consciousness layer ------------------------------------------------------------------------
    def self_model(self) -> SelfModel:
        """Identity, values and style from the [self_model] settings."""
        return SelfModel.from_settings(self.settings.self_model)

    def memory(self, session: str | None = None) -> MemoryStream:
        """The memory stream of `session` (default: the configured session)."""
        session = session or self.settings.session
        with self._lock:
            if session not in self._memories:
                self._memories[session] = MemoryStream(
                    self.client,
                    session,
                    lambda: self.embedder,
                    self.settings.memory,
                    model=canonical_name(self.settings.embedding.model),
                )
        return self._memories[session]

    def sessions(self) -> list[str]:
        """The sessions that have memories in this store."""
        return stored_sessions(self.client)

    def backend(self, name: str | None = None, model: str | None = None) -> Backend:
        """The generation backend: ollama, mlx, blt, or auto (see `rag.backends.select.select_backend`)."""
        key = (name or self.settings.backend, model)
        with self._lock:
            if key not in self._backends:
                self._backends[key] = select_backend(self.settings, key[0], model)
        return self._backends[key]

    def adopt_backend(self, backend: Backend, model: str | None = None) -> None:
        """Answer with `backend` (loaded elsewhere, e.g. in a thread while this store opened) where `backend()`
        would load the configured backend for `model`."""
        with self._lock:
            self._backends[(self.settings.backend, model)] = backend

    def corpus(self) -> Any | None:
        """The corpus collection for answering, or None when nothing has been ingested yet."""
        if self._corpus is None:
            name = self.settings.store.collection
            if name not in collection_names(self.client):
                return None
            self._corpus = self.collection()
        return self._corpus

    def prepare(
        self,
        question: str,
        *,
        backend: Backend | None = None,
        k: int | None = None,
        session: str | None = None,
        use_retrieval: bool = True,
        use_memory: bool = True,
        history: list[Any] | None = None,
    ) -> Prepared:
        """Everything before the backend call: retrieval, recall, confidence, workspace and prompt."""
        memory = self.memory(session) if use_memory and self.settings.memory.enabled else None
        return self._prepare(question, backend, k, memory, use_retrieval, history)

    def _prepare(
        self,
        question: str,
        backend: Backend | None,
        k: int | None,
        memory: MemoryStream | None,
        use_retrieval: bool,
        history: list[Any] | None,
    ) -> Prepared:
        """`prepare` with the session's memory stream already looked up (None: no memory)."""
        if not question or not question.strip():
            raise BackendError("the question is empty")
        corpus = self.corpus() if use_retrieval else None
        lexical = self.lexical(corpus) if corpus is not None and self.settings.retrieval.mode != "dense" else None
        prep = prepare(
            question,
            settings=self.settings,
            backend=backend if backend is not None else self.backend(),
            embed=self.embedder.embed_query,
            collection=corpus,
            lexical=lexical,
            fusion=self.fusion(),
            memory=memory,
            k=k,
            history=history,
            use_retrieval=use_retrieval,
            **self._calibrated(corpus),
        )
        if lexical is not None and lexical.missed:
            prep.warnings.append(STALE_NOTE)
        if use_retrieval and corpus is None:
            prep.warnings.append(
                f"no corpus collection {self.settings.store.collection!r} yet: answering without exemplars "
                "(run `shvayambhu ingest PATH`)"
            )
        return prep

    def ask(
        self,
        question: str,
        *,
        backend: str | Backend | None = None,
        model: str | None = None,
        k: int | None = None,
        session: str | None = None,
        use_retrieval: bool = True,
        use_memory: bool = True,
        history: list[Any] | None = None,
        show_prompt: bool = False,
    ) -> Answer:
        """Answer `question` from exemplars and memories through a backend; the exchange is remembered."""
        prep, be, memory = self._start(question, backend, model, k, session, use_retrieval, use_memory, history)
        return run(prep, be, settings=self.settings, memory=memory, show_prompt=show_prompt)

    def stream(
        self,
        question: str,
        *,
        backend: str | Backend | None = None,
        model: str | None = None,
        k: int | None = None,
        session: str | None = None,
        use_retrieval: bool = True,
        use_memory: bool = True,
        history: list[Any] | None = None,
        show_prompt: bool = False,
    ) -> AnswerStream:
        """Like `ask`, as an iterator of text pieces (the same text `ask` gives); `.answer` after it ends."""
        prep, be, memory = self._start(question, backend, model, k, session, use_retrieval, use_memory, history)
        return AnswerStream(prep, be, settings=self.settings, memory=memory, show_prompt=show_prompt)

    def _start(
        self,
        question: str,
        backend: str | Backend | None,
        model: str | None,
        k: int | None,
        session: str | None,
        use_retrieval: bool,
        use_memory: bool,
        history: list[Any] | None,
    ) -> tuple[Prepared, Backend, MemoryStream | None]:
        """What ask and stream share: the backend, the session's memory, and everything before generation."""
        be = backend if backend is not None and not isinstance(backend, str) else self.backend(backend, model)
        memory = self.memory(session) if use_memory and self.settings.memory.enabled else None
        return self._prepare(question, be, k, memory, use_retrieval, history), be, memory

    # -- confidence calibrated on this store ----------------------------------------------------------------
    def calibration(self, corpus: Any | None = None) -> tuple[cal.Reference | None, cal.Weights | None]:
        """The corpus's score reference (measured on first use, kept in the data directory and measured again
        when the collection has grown or shrunk by a fifth, or another embedding model or precision reads it)
        and its fitted confidence weights (None: the shipped defaults)."""
        col = corpus if corpus is not None else self.corpus()
        if col is None:
            return None, None
        with self._lock:
            count = col.count()
            try:
                ref, weights = self._calibration.get(col.name) or cal.load(self._calibration_path(col.name))
            except ValueError as e:
                raise StoreError(str(e)) from None
            model, precision = canonical_name(self.settings.embedding.model), self.embedder.precision
            if ref is None or ref.stale(count) or (ref.model, ref.precision) != (model, precision):
                key = (str(getattr(col, "id", col.name)), count, model, precision)  # a copied store shares its id
                ref = _REFERENCES.get(key) or cal.build_reference(col, self.embedder.embed)
                if ref is not None:
                    ref.model, ref.precision = model, precision
                    _REFERENCES[key] = ref
                    cal.save(self._calibration_path(col.name), ref, weights)
            self._calibration[col.name] = (ref, weights)
            return ref, weights

    def _calibration_path(self, collection: str) -> Path:
        return cal.path_for(self.settings.data_dir, collection)

    def _calibrated(self, corpus: Any | None) -> dict[str, Any]:
        ref, weights = self.calibration(corpus) if corpus is not None else (None, None)
        return {"reference": ref, "weights": weights}

    def fit_calibration(self, examples: list[tuple[Answer, bool]]) -> dict[str, Any]:
        """Re-fit the confidence weights on answers this store gave and whether each was correct; saves them with
        the store (per collection, read by the next ask). Returns n, AUROC before and after (on these answers)."""
        rows = [(a.details, bool(ok), a.done_reason == "abstain") for a, ok in examples if a.details is not None]
        if len(rows) < 10 or len({ok for _, ok, _ in rows}) < 2:
            raise UsageError(
                f"fit_calibration needs at least 10 answers with confidence details, right and wrong ones, "
                f"got {len(rows)} ({sum(ok for _, ok, _ in rows)} right)"
            )
        col = self.corpus()
        if col is None:
            raise StoreError("no corpus to calibrate: ingest documents first")
        ref, old = self.calibration(col)
        fitted, summary = meta.fit([d for d, _, _ in rows], [ok for _, ok, _ in rows], [ab for _, _, ab in rows], old)
        summary.update(collection=col.name, path=str(self._calibration_path(col.name)))
        with self._lock:
            cal.save(self._calibration_path(col.name), ref, fitted)
            self._calibration[col.name] = (ref, fitted)
        return summary

    def chat(self, session: str | None = None, **ask_options: Any) -> ChatSession:
        """A conversation: recent turns are kept in the prompt, every exchange goes to `session`'s memory."""
        return ChatSession(self, session or self.settings.session, **ask_options)


class ChatSession:
    """The state of one interactive conversation; the CLI `chat` loop drives it."""

    def __init__(self, assistant: Shvayambhu, session: str, **ask_options: Any) -> None:
        self.assistant = assistant
        self.session = session
        self.options = ask_options
        self.history: list[dict[str, str]] = []
        self.last: Answer | None = None

    def send(self, text: str) -> AnswerStream:
        """Stream the answer to `text`; when it ends the turn joins the history."""

        def done(answer: Answer) -> None:
            self.last = answer
            self.history.append({"role": "user", "content": text})
            self.history.append({"role": "assistant", "content": answer.answer})

        stream = self.assistant.stream(text, session=self.session, history=list(self.history), **self.options)
        stream.on_done = done
        return stream

    def ask(self, text: str) -> Answer:
        """The whole answer at once."""
        return self.send(text).result()

    def reset(self) -> None:
        """Forget the recent turns of this conversation (its memories stay; see `memory().clear()`)."""
        self.history.clear()
        self.last = None

    def memories(self, limit: int = 10) -> list[Any]:
        """The newest memories of the session."""
        return self.assistant.memory(self.session).list(limit=limit)
