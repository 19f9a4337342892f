"""Shared fixtures: the real embedding model (loaded once), temporary stores, the seed corpus ingested once.

The consciousness-layer fixtures at the end add a writable seed store, a fake Ollama server and the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blt import blas

blas.enable_openblas(verbose=False)  # before anything imports mlx: OpenBLAS under MLX on Linux CPUs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "ingest" / "data" / "seed.jsonl"


def seed_paths() -> list[Path]:
    """The bundled seed corpus (one file once assembled, else its parts)."""
    return [SEED] if SEED.exists() else sorted((REPO / "ingest" / "data" / "parts").glob("*.jsonl"))


@pytest.fixture(autouse=True)
def _close_test_stores():
    """Each test's own stores are closed after it (their files and threads), so a run of hundreds of tests does
    not run out of file descriptors; stores opened before it (the session's seed store) stay open."""
    from index.lexical import wait_for_rebuilds
    from index.store import close_stores, opened_stores

    before = opened_stores()
    yield
    wait_for_rebuilds()  # a search's background rebuild of a keyword index ends before its store closes
    close_stores(keep=before)


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2, loaded once per test session (the same cached instance that
    `rag.api.Shvayambhu` gets with default settings)."""
    from index.embed import DEFAULT_MODEL, load_embedder

    return load_embedder(DEFAULT_MODEL, "cpu")


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
    """A store holding the seed corpus and its keyword index, ingested once per session: (data_dir, collection).
    Read-only."""
    from index.lexical import LexicalStore
    from index.store import get_collection, open_client
    from ingest.pipeline import ingest_paths

    d = tmp_path_factory.mktemp("seed_store")
    client = open_client(d)
    col = get_collection(client, "corpus", model=embedder.name, dim=embedder.dim, embed_field="prompt")
    ingest_paths(seed_paths(), col, embedder, progress=False, lexical=LexicalStore.for_collection(d, col))
    return d, col


# ---------------------------------------------------------------------------------------------------------
# The consciousness layer: a writable copy of the seed store, a fake Ollama, an assistant wired to both.


@pytest.fixture
def seed_home(seed_store, tmp_path: Path) -> Path:
    """A private, writable copy of the seed store (corpus ingested, no memories): use it as SHVAYAMBHU_HOME
    for tests that write memories or run the CLI in a subprocess. Copying takes milliseconds."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(seed_store[0], home)
    return home


@pytest.fixture
def fake_ollama():
    """A started tests/ollama_server.OllamaServer on 127.0.0.1 with model `llama3.2`; `.url`, `.bodies()`,
    `.behavior("llama3.2")` to change its reply, delays or failures."""
    try:
        from tests.ollama_server import ModelBehavior, OllamaServer
    except ImportError:  # tests/ is not a package when pytest runs with rootdir-relative imports
        from ollama_server import ModelBehavior, OllamaServer

    with OllamaServer({"llama3.2": ModelBehavior()}) as server:
        yield server


@pytest.fixture
def make_assistant(seed_home: Path, fake_ollama):
    """Factory: `make_assistant(**sections)` -> rag.api.Shvayambhu over `seed_home`, talking to `fake_ollama`
    with backend "ollama" and temperature 0; keyword arguments override settings sections, e.g.
    `make_assistant(memory={"reflect_every": 2}, workspace={"budget_bytes": 2000})`."""
    from rag.api import Shvayambhu
    from rag.config import load_settings

    def make(**sections):
        overrides = {
            "backend": "ollama",
            "store": {"data_dir": str(seed_home)},
            "ollama": {"host": fake_ollama.url, "temperature": 0.0, "seed": 7},
        }
        for key, value in sections.items():
            if isinstance(value, dict):
                overrides.setdefault(key, {}).update(value)
            else:
                overrides[key] = value
        return Shvayambhu(load_settings(overrides=overrides, environ={}))

    return make


@pytest.fixture
def cli_env(seed_home: Path, fake_ollama) -> dict[str, str]:
    """Environment for running `shvayambhu` in a subprocess against `seed_home` and `fake_ollama`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHVAYAMBHU_", "OLLAMA_"))}
    env.update(
        {
            "SHVAYAMBHU_HOME": str(seed_home),
            "OLLAMA_HOST": fake_ollama.url,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


@pytest.fixture
def run_cli(capsys, monkeypatch, seed_home: Path, fake_ollama):
    """Run `rag.cli.main(argv)` in this process (no interpreter start-up, the embedder already loaded):
    returns (exit code, stdout, stderr). SHVAYAMBHU_HOME and OLLAMA_HOST point at seed_home, fake_ollama."""
    from rag import cli

    monkeypatch.setenv("SHVAYAMBHU_HOME", str(seed_home))
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    monkeypatch.delenv("SHVAYAMBHU_CONFIG", raising=False)

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        import io
        import sys

        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            cli.main(list(argv))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def served(make_assistant):
    """`make_assistant()` served over HTTP in a thread on 127.0.0.1 (rag.serve.start_in_thread); `.url`,
    `.assistant`."""
    from rag.serve import ServeOptions, start_in_thread

    assistant = make_assistant()
    with start_in_thread(assistant, ServeOptions()) as running:
        running.assistant = assistant
        yield running
