"""Shared fixtures: the real embedding model (loaded once), temporary stores, the seed corpus ingested once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "ingest" / "data" / "seed.jsonl"


def seed_paths() -> list[Path]:
    """The bundled seed corpus (one file once assembled, else its parts)."""
    return [SEED] if SEED.exists() else sorted((REPO / "ingest" / "data" / "parts").glob("*.jsonl"))


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    from index.embed import load_embedder

    return load_embedder()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory for an embedded Chroma store."""
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def make_collection(data_dir: Path, embedder):
    """Factory: a fresh corpus collection in the test's own store."""
    from index.store import get_collection, open_client

    client = open_client(data_dir)

    def make(name: str = "corpus", embed_field: str = "prompt"):
        return get_collection(client, name, model=embedder.name, dim=embedder.dim, embed_field=embed_field)

    return make


@pytest.fixture(scope="session")
def seed_store(tmp_path_factory: pytest.TempPathFactory, embedder):
    """A store holding the seed corpus, ingested once per session: (data_dir, collection). Treat as read-only."""
    from index.store import get_collection, open_client
    from ingest.pipeline import ingest_paths

    d = tmp_path_factory.mktemp("seed_store")
    col = get_collection(open_client(d), "corpus", model=embedder.name, dim=embedder.dim, embed_field="prompt")
    ingest_paths(seed_paths(), col, embedder, progress=False)
    return d, col
