"""Index: model mismatch, self-retrieval, MMR, a real `chroma run` server, concurrent readers, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.retrieve import search
from index.store import StoreError, get_collection, open_client
from ingest.readers import read_records
from tests.conftest import seed_paths


def cli(data_dir: Path, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "SHVAYAMBHU_HOME": str(data_dir), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
        **kw,
    )


def test_model_mismatch_is_a_clear_error(data_dir: Path, embedder) -> None:
    client = open_client(data_dir)
    get_collection(client, "corpus", model=embedder.name, dim=embedder.dim, embed_field="prompt")
    with pytest.raises(StoreError, match="built with embedding model 'all-MiniLM-L6-v2'.*--embedding-model"):
        get_collection(client, "corpus", model="some/other-model", dim=768)
    with pytest.raises(StoreError, match="embeds the 'prompt'"):
        get_collection(client, "corpus", model=embedder.name, dim=embedder.dim, embed_field="response")
    with pytest.raises(StoreError, match="invalid"):
        get_collection(client, "a b", model=embedder.name, dim=embedder.dim)


def heldout_prompts() -> list[str]:
    recs = read_records(seed_paths())
    held = [r.prompt for r in recs if r.split == "heldout"]
    return held or [r.prompt for r in recs[::10]]


def test_self_retrieval_hit_at_1(seed_store, embedder) -> None:
    _, col = seed_store
    prompts = heldout_prompts()
    assert len(prompts) >= 40
    hits = sum(search(col, embedder, p, k=1)[0].prompt == p for p in prompts)
    assert hits / len(prompts) >= 0.95


def test_filters_min_score_and_scores(seed_store, embedder) -> None:
    _, col = seed_store
    hits = search(col, embedder, "How can I sleep better at night?", k=5, where={"category": "advice"})
    assert hits and all(h.metadata["category"] == "advice" for h in hits)
    assert all(-1.0 <= h.score <= 1.0 for h in hits) and [h.score for h in hits] == sorted(
        (h.score for h in hits), reverse=True
    )
    stored = hits[0].prompt  # asked word for word, a stored question scores ~1 and passes a 0.99 floor
    exact = search(col, embedder, stored, k=5, min_score=0.99)
    assert exact and exact[0].prompt == stored and all(h.score >= 0.99 for h in exact)
    assert search(col, embedder, "Torque spec for cylinder head bolts on a 2004 Civic?", k=5, min_score=0.9) == []


def mean_pairwise_similarity(hits) -> float:
    e = np.stack([h.embedding for h in hits]) if hits[0].embedding is not None else None
    assert e is not None
    sims = e @ e.T
    n = len(hits)
    return float((sims.sum() - n) / (n * (n - 1)))


def test_mmr_is_more_diverse_than_top_k(seed_store, embedder) -> None:
    _, col = seed_store
    q = "How do I deal with stress and anxiety?"
    vec = embedder.embed_query(q)
    from index.retrieve import query_vector

    plain = query_vector(col, vec, k=5, mmr=True, fetch_k=5, mmr_lambda=1.0)  # lambda 1: pure relevance
    mmr = query_vector(col, vec, k=5, mmr=True, fetch_k=30, mmr_lambda=0.3)
    assert [h.id for h in plain] == [h.id for h in search(col, embedder, q, k=5)]
    assert mean_pairwise_similarity(mmr) < mean_pairwise_similarity(plain)
    assert mmr[0].id == plain[0].id  # the best hit still comes first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ingest_and_search_against_a_chroma_server(tmp_path: Path) -> None:
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    server = subprocess.Popen(
        [chroma, "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        flags = ["--chroma-host", "127.0.0.1", "--chroma-port", str(port)]
        corpus = seed_paths()[0]
        r = cli(tmp_path / "unused", *flags, "ingest", str(corpus), "--json")
        assert r.returncode == 0, r.stderr
        added = json.loads(r.stdout)["added"]
        assert added > 0
        first = read_records([corpus])[0]
        r = cli(tmp_path / "unused", *flags, "search", first.prompt, "-k", "2", "--json")
        assert r.returncode == 0, r.stderr
        hits = json.loads(r.stdout)
        assert hits[0]["prompt"] == first.prompt and set(hits[0]) == {
            "id",
            "score",
            "prompt",
            "response",
            "metadata",
            "dense_rank",
            "lexical_rank",
            "fused_score",
        }
        r = cli(tmp_path / "unused", *flags, "status", "--json")
        assert json.loads(r.stdout)["collections"][0]["count"] == added
        assert not (tmp_path / "unused" / "chroma").exists()  # nothing went to the embedded store
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    r = cli(tmp_path, "--chroma-host", "127.0.0.1", "--chroma-port", str(free_port()), "search", "x")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cannot reach the Chroma server" in r.stderr and "chroma run" in r.stderr


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = cli(tmp_path, "ingest", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = cli(tmp_path, "search", "x")
    assert r.returncode == 1 and "does not exist yet" in r.stderr and "Traceback" not in r.stderr
    r = cli(tmp_path, "search", "x", "--bogus-flag")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ingest_json_and_readers_while_another_process_ingests(tmp_path: Path) -> None:
    corpus = seed_paths()[0]
    first = read_records([corpus])[0]
    assert cli(tmp_path, "ingest", str(corpus)).returncode == 0
    big = tmp_path / "more.jsonl"
    big.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"Extra question {i} about the sea?",
                    "response": f"The sea covers most of Earth; note {i} of many.",
                }
            )
            for i in range(1500)
        )
        + "\n"
    )
    env = {**os.environ, "SHVAYAMBHU_HOME": str(tmp_path)}
    writer = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "ingest", str(big), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    readers = [
        subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "search", first.prompt, "-k", "1", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in readers:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        assert json.loads(out)[0]["prompt"] == first.prompt
    out, err = writer.communicate(timeout=180)
    assert writer.returncode == 0, err
    summary = json.loads(out)
    assert summary["added"] == 1500 and summary["rejections"] == []


def test_onnx_runtime_gives_the_same_vectors_as_torch(embedder) -> None:
    from index.embed import Embedder

    torch_embedder = Embedder(runtime="torch")
    texts = [r.prompt for r in read_records(seed_paths())[:64]] + ["", "नमस्ते 🌍", "word " * 400]
    assert embedder.runtime == "onnx"
    a, b = torch_embedder.embed(texts), embedder.embed(texts)
    assert a.shape == b.shape == (len(texts), 384)
    assert float((a * b).sum(axis=1).min()) > 0.9999
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
