"""The Python API: `Shvayambhu(settings)` ingests, searches and answers; the CLI is a thin layer over it."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from index.embed import Embedder, canonical_name, load_embedder
from index.retrieve import Hit, search
from index.store import StoreError, collection_info, get_collection, open_client
from ingest.pipeline import IngestSummary, ingest_paths
from ingest.readers import iter_files
from rag.config import Settings, load_settings


def bundled_corpus() -> Path:
    """The seed corpus shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "ingest" / "data" / "seed.jsonl"


class Shvayambhu:
    """One assistant over one store. Heavy parts (client, embedding model) load on first use."""

    def __init__(self, settings: Settings | None = None, **overrides: Any):
        self.settings = settings or load_settings(overrides=overrides or None)

    @cached_property
    def client(self) -> Any:
        s = self.settings.store
        return open_client(self.settings.data_dir, host=s.chroma_host or None, port=s.chroma_port)

    @cached_property
    def embedder(self) -> Embedder:
        return load_embedder(self.settings.embedding.model, self.settings.embedding.device)

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
            self.client, name, model=model, dim=self.embedder.dim, embed_field=emb.embed_field, create=True
        )

    def ingest(
        self, paths: Iterable[str | Path], *, prune: bool = False, strict: bool = False, progress: bool | None = None
    ) -> IngestSummary:
        """Read, validate, embed and store `paths` (files or folders); see `ingest.pipeline.ingest_paths`."""
        paths = list(paths)
        list(iter_files(paths))  # a missing path fails before anything is created
        return ingest_paths(
            paths,
            self.collection(create=True),
            lambda: self.embedder,
            embed_field=self.settings.embedding.embed_field,
            prune=prune,
            strict=strict,
            progress=progress,
        )

    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        where: dict[str, Any] | None = None,
        mmr: bool | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """Top-k exemplars for `query` (MMR-diversified when asked), best first."""
        r = self.settings.retrieval
        return search(
            self.collection(),
            self.embedder,
            query,
            k=k or r.k,
            where=where,
            min_score=r.min_score if min_score is None else min_score,
            mmr=r.mmr if mmr is None else mmr,
            fetch_k=r.fetch_k,
            mmr_lambda=r.mmr_lambda,
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
        }
