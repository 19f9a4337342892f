"""Embedding a document's passages while its later pages are still being converted.

Converting a PDF (pdfminer, pure Python) holds one core and the GIL; ONNX Runtime lets go of the GIL while it
embeds. `EmbedAhead` takes the passages of converted documents as they come (`offer`), a few pages at a time
(`ingest.documents.convert_pages`), and embeds those the store does not hold yet on a background thread; once
every file is read, `finish` hands over the vectors by text, and the writer embeds only what is left.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from index.embed import Embedder
from ingest.records import Record

BATCH = 32  # passages per embedding call at most (a PDF page gives three or four)


class EmbedAhead:
    """A background thread embedding offered records' texts; the model loads with the first one offered."""

    def __init__(self, collection: Any, embedder: Embedder | Callable[[], Embedder], embed_field: str) -> None:
        self.collection = collection
        self.embedder = embedder
        self.embed_field = embed_field
        self.model: Embedder | None = None
        self.vectors: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._queue: queue.Queue[Record | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def offer(self, record: Record) -> None:
        """Embed `record`'s text in the background unless the store already holds it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="embed-ahead", daemon=True)
            self._thread.start()
        self._queue.put(record)

    def finish(self) -> dict[str, Any]:
        """Wait for what was offered and return {text: vector}; empty when embedding ahead failed (the writer
        then embeds everything itself and meets the error there)."""
        if self._thread is None:
            return {}
        self._queue.put(None)
        self._thread.join()
        return {} if self.error is not None else self.vectors

    def _run(self) -> None:
        done = False
        while not done:
            batch = [self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get())
            done = batch[-1] is None
            records = [r for r in batch if r is not None]
            if not records or self.error is not None:
                continue
            try:
                self._embed(records)
            except Exception as e:  # noqa: BLE001 - reported by the writer, which embeds these again
                self.error = e

    def _embed(self, records: list[Record]) -> None:
        held = set(self.collection.get(ids=[r.id for r in records], include=[])["ids"])
        texts = list(dict.fromkeys(t for r in records if r.id not in held for t in [r.embed_text(self.embed_field)]))
        texts = [t for t in texts if t not in self.vectors]
        if not texts:
            return
        if self.model is None:
            self.model = self.embedder if isinstance(self.embedder, Embedder) else self.embedder()
        for text, vector in zip(texts, self.model.embed(texts), strict=True):
            self.vectors[text] = vector
