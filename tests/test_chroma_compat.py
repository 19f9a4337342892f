"""The contract of index/chroma_compat.py with the installed chromadb: each Chroma internal the project relies on,
exercised against a real embedded Chroma (not through the project's own store code). A failure names the internal
and the chromadb release chroma_compat was last tested on, so an upgrade that breaks one says where to look."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from index import chroma_compat as cc


@contextmanager
def contract(internal: str) -> Iterator[None]:
    """Fail with one line naming `internal`, the release tested and the one installed."""
    try:
        yield
    except Exception as e:  # AssertionError included: whatever the installed release does differently
        detail = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        pytest.fail(
            f"Chroma internal {internal} (index/chroma_compat.py) fails with chromadb {cc.installed_version()} "
            f"(last tested on {cc.TESTED_VERSION}): {detail}. Adapt chroma_compat to the installed release, then "
            "set TESTED_VERSION to it.",
            pytrace=False,
        )


def persistent(folder: Path) -> Any:
    return chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[Any]:
    """A raw embedded Chroma client on a fresh folder, stopped after the test."""
    folder = tmp_path / "chroma"
    yield persistent(folder)
    cc.stop_embedded(str(folder))


def test_the_tested_release_is_the_installed_one() -> None:
    installed = cc.installed_version()
    assert installed == cc.TESTED_VERSION, (
        f"chromadb {installed} is installed, but index/chroma_compat.py was tested on {cc.TESTED_VERSION}: when the "
        f"other tests of {Path(__file__).name} pass, set TESTED_VERSION = {installed!r}"
    )


def test_collection_names(chroma) -> None:
    for name in ("corpus", "memory_a"):
        chroma.create_collection(name, embedding_function=None)
    with contract("list_collections() items (.name)"):
        names = cc.collection_names(chroma)
        assert sorted(names) == ["corpus", "memory_a"] and all(isinstance(n, str) for n in names), names


def test_server_api_settings_and_folder(chroma, tmp_path: Path) -> None:
    col = chroma.create_collection("corpus", embedding_function=None)
    with contract("Client._server / Collection._client"):
        api = cc.server_api(chroma)
        assert api is not chroma and cc.server_api(col) is api, "a client and its collection reach one server API"
    with contract("ServerAPI.get_settings() (is_persistent, persist_directory, chroma_api_impl)"):
        s = cc.settings_of(col)
        assert s is not None and s.is_persistent and hasattr(s, "chroma_api_impl"), s
        assert cc.embedded_folder(chroma) == cc.embedded_folder(col) == tmp_path / "chroma"
    with contract("Settings.chroma_server_host / chroma_server_http_port"):
        assert cc.server_address(col) == f"{s.chroma_server_host}:{s.chroma_server_http_port}"
    with contract("EphemeralClient settings (is_persistent False)"):
        assert cc.embedded_folder(cc.ephemeral_client()) is None
    assert cc.settings_of(object()) is None and cc.embedded_folder("not chroma") is None


def test_cosine_configuration(chroma) -> None:
    with contract("create_collection(configuration=COSINE_CONFIGURATION)"):
        col = chroma.create_collection("cos", embedding_function=None, configuration=cc.COSINE_CONFIGURATION)
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.6, 0.8]])
        got = col.query(query_embeddings=[[1.0, 0.0]], n_results=2, include=["distances"])
        # cosine distance is 1 - cos: 0 and 0.4 (squared L2, Chroma's default space, would give 0.8)
        assert np.allclose(got["distances"][0], [0.0, 0.4], atol=1e-4), got["distances"]


def test_max_batch_size(chroma) -> None:
    col = chroma.create_collection("corpus", embedding_function=None)
    with contract("Collection._client.get_max_batch_size()"):
        n = cc.max_batch_size(col, default=-1)
        assert n == chroma.get_max_batch_size() and n > 0, n
    assert cc.max_batch_size(object(), default=7) == 7


def test_stop_embedded_lets_the_folder_open_afresh(tmp_path: Path) -> None:
    folder = tmp_path / "chroma"
    persistent(folder).create_collection("corpus", embedding_function=None).add(ids=["a"], embeddings=[[1.0, 0.0]])
    with contract("SharedSystemClient._identifier_to_system / _identifier_to_refcount, System.stop()"):
        assert cc.stop_embedded(str(folder)), "no cached system found for the folder"
        assert not cc.stop_embedded(str(folder)), "the folder's system is still cached after stopping it"
        again = persistent(folder)
        assert again.get_collection("corpus").count() == 1
    cc.stop_embedded(str(folder))


def test_ephemeral_client_tolerates_one_made_with_other_settings() -> None:
    try:
        chromadb.EphemeralClient()  # default settings, as a library in the same process might make it
    except ValueError:  # this process made one with chroma_compat's settings already
        pass
    with contract("EphemeralClient: ValueError for a second in-memory system with other settings"):
        client = cc.ephemeral_client()
        col = client.get_or_create_collection("compat-probe", embedding_function=None)
        col.upsert(ids=["a"], embeddings=[[1.0]])
        assert col.count() == 1


WRITER = """
import sys
import chromadb
import numpy as np
from chromadb.config import Settings
col = chromadb.PersistentClient(sys.argv[1], settings=Settings(anonymized_telemetry=False)).get_collection("corpus")
v = np.random.default_rng(1).standard_normal((160, 8)).astype("float32")
col.add(ids=[f"s{i}" for i in range(160)], embeddings=v.tolist(), metadatas=[{"line": i + 1} for i in range(160)])
"""


def test_a_stale_view_is_recognised_and_reloaded(chroma, tmp_path: Path) -> None:
    """Another process writes the vector index this process has loaded: Chroma's filtered query fails with the
    error `is_stale_view` recognises, and `reload_view` (new Rust bindings) makes the same collection work."""
    hnsw = {"hnsw": {"space": "cosine", "sync_threshold": 20, "batch_size": 20}}  # index files written every 20
    col = chroma.create_collection("corpus", embedding_function=None, configuration=hnsw)
    v = np.random.default_rng(0).standard_normal((40, 8)).astype("float32")
    col.add(ids=[f"r{i}" for i in range(40)], embeddings=v.tolist(), metadatas=[{"line": i + 1} for i in range(40)])
    q = {"query_embeddings": [[1.0] * 8], "n_results": 3, "where": {"line": {"$gt": 0}}}
    assert len(col.query(**q)["ids"][0]) == 3  # this process has the index loaded
    subprocess.run([sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path / "chroma")], check=True, timeout=120)
    try:
        col.query(**q)
        stale: Exception | None = None
    except Exception as e:  # chromadb.errors.InternalError
        stale = e
    with contract(f"the stale-view error text {cc.STALE_VIEW_TEXT!r}"):
        assert stale is not None, "the query no longer fails: the retry in index.lock.query_fresh may go"
        assert cc.is_stale_view(stale), f"another error: {stale}"
    assert not cc.is_stale_view(ValueError("collection corpus does not exist"))
    with contract("RustBindingsAPI.bindings / start()"):
        cc.reload_view(col)
        assert len(col.query(**q)["ids"][0]) == 3 and col.count() == 200
    cc.reload_view(cc.ephemeral_client())  # nothing to reload in memory: no error
