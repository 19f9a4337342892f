"""Embedding in a child process (long ingests): the same vectors as in-process, the same store, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import ingest.pipeline
from index.embed import EmbeddingError
from index.embed_process import EmbedProcess
from ingest.pipeline import ingest_paths

TEXTS = ["How do plants grow?", "Café au lait, s'il vous plaît", "", "def f(x): return x * 2", "東京の天気は?"]


def test_child_vectors_equal_in_process_vectors_in_order(embedder) -> None:
    with EmbedProcess(embedder) as child:
        child.submit(TEXTS, batch_size=2)
        child.submit(TEXTS[::-1])
        first, second = child.result(), child.result()
    np.testing.assert_allclose(first, embedder.embed(TEXTS), atol=1e-6)
    np.testing.assert_allclose(second, embedder.embed(TEXTS[::-1]), atol=1e-6)


def test_a_child_that_cannot_load_its_model_is_a_clear_error(tmp_path: Path) -> None:
    missing = SimpleNamespace(runtime="onnx", dim=384, name=str(tmp_path / "no-such-model"), precision="fp32")
    with pytest.raises(EmbeddingError, match="embedding process failed.*no-such-model"):
        EmbedProcess(missing)


def test_torch_runtime_is_refused() -> None:
    with pytest.raises(EmbeddingError, match="ONNX"):
        EmbedProcess(SimpleNamespace(runtime="torch"))


def test_an_ingest_through_the_child_stores_what_one_in_process_stores(
    tmp_path: Path, make_collection, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"prompt": f"Question {i} about {w}?", "response": f"An answer about {w}, number {i}."}
        for i, w in enumerate(["rivers", "stars", "bread", "music", "chess", "rain", "bees", "glass"] * 5)
    ]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    started: list[int] = []
    real_init = EmbedProcess.__init__

    def counting_init(self, emb) -> None:
        started.append(1)
        real_init(self, emb)

    monkeypatch.setattr(EmbedProcess, "__init__", counting_init)
    alone = make_collection("inprocess")
    ingest_paths([corpus], alone, embedder, progress=False)
    assert not started  # 40 records: below MIN_TEXTS, no child
    monkeypatch.setattr(ingest.pipeline, "MIN_TEXTS", 10)
    beside = make_collection("child")
    ingest_paths([corpus], beside, embedder, progress=False)
    assert started == [1]
    a = alone.get(include=["embeddings", "documents", "metadatas"])
    b = beside.get(include=["embeddings", "documents", "metadatas"])
    order_a, order_b = np.argsort(a["ids"]), np.argsort(b["ids"])
    assert sorted(a["ids"]) == sorted(b["ids"]) and len(a["ids"]) == 40
    assert [a["documents"][i] for i in order_a] == [b["documents"][i] for i in order_b]
    assert [a["metadatas"][i] for i in order_a] == [b["metadatas"][i] for i in order_b]
    np.testing.assert_allclose(np.array(a["embeddings"])[order_a], np.array(b["embeddings"])[order_b], atol=1e-6)
