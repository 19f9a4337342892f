"""Hybrid retrieval with the real model, real Chroma and bm25s: what dense misses, indexes kept in step (edits,
prune, kill -9), rebuilds, filters and MMR over the fused list."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import index.lexical as lexical_mod
from index.errors import UsageError
from index.lexical import DIRTY, MANIFEST, STALE_NOTE, LexicalStore, collection_ids, lexical_dir
from index.lock import write_lock
from index.retrieve import search
from index.store import get_collection, open_client
from ingest.pipeline import ingest_paths
from rag.eval.beir import load_beir
from rag.eval.retrieval import RetrievalOptions, evaluate_retrieval

REPO = Path(__file__).resolve().parent.parent
RARE = Path(__file__).parent / "data" / "rare_tiny"


def write_corpus(path: Path, edits: dict[str, str] | None = None, drop: set[str] | None = None) -> dict[str, str]:
    """The rare_tiny documents as corpus records (prompt = title, response = text, category = family);
    returns doc id -> prompt."""
    edits, drop = edits or {}, drop or set()
    prompts = {}
    with path.open("w", encoding="utf-8") as f:
        for line in (RARE / "corpus.jsonl").open(encoding="utf-8"):
            d = json.loads(line)
            if d["_id"] in drop:
                continue
            family = d["_id"].rstrip("0123456789")
            rec = {"prompt": d["title"], "response": edits.get(d["_id"], d["text"]), "category": family}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            prompts[d["_id"]] = d["title"]
    return prompts


def queries() -> dict[str, tuple[str, str]]:
    """query id -> (query text, relevant doc id)."""
    qs = {q["_id"]: q["text"] for q in map(json.loads, (RARE / "queries.jsonl").open(encoding="utf-8"))}
    rel = [line.split("\t")[:2] for line in (RARE / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    return {q: (qs[q], d) for q, d in rel}


@pytest.fixture
def rare_store(data_dir: Path, make_collection, embedder, tmp_path: Path):
    corpus = tmp_path / "rare.jsonl"
    prompts = write_corpus(corpus)
    col = make_collection("rare", embed_field="both")
    lex = LexicalStore.for_collection(data_dir, col)
    ingest_paths([corpus], col, embedder, embed_field="both", progress=False, lexical=lex)
    return col, lex, prompts, corpus


def in_step(col, lex: LexicalStore) -> bool:
    idx = lex.index(col)
    return sorted(idx.ids) == sorted(collection_ids(col)) and not (lex.root / DIRTY).exists()


def test_eval_hybrid_finds_what_dense_misses(embedder):
    ds = load_beir(RARE)
    rep = {
        m: evaluate_retrieval(ds, embedder, RetrievalOptions(ks=(1, 10), mode=m, exact=True))
        for m in ("dense", "hybrid")
    }
    dense_miss = {q for q, v in rep["dense"].per_query.items() if v["hit_rate@1"] == 0}
    rescued = {q for q in dense_miss if rep["hybrid"].per_query[q]["hit_rate@1"] == 1}
    assert len(dense_miss) >= 5 and len(rescued) >= len(dense_miss) // 2
    assert rep["hybrid"].metrics["ndcg@10"] > rep["dense"].metrics["ndcg@10"] + 0.1
    every = evaluate_retrieval(ds, embedder, RetrievalOptions(ks=(10,), mode="all", exact=True))
    assert set(every.modes) == {"dense", "lexical", "hybrid"}
    assert every.modes["hybrid"]["ndcg@10"] == pytest.approx(rep["hybrid"].metrics["ndcg@10"])
    assert "modes" in every.to_json()


def test_store_search_modes_and_hit_fields(rare_store, embedder):
    col, lex, prompts, _ = rare_store
    found = {"dense": 0, "hybrid": 0, "lexical": 0}
    for text, doc in queries().values():
        for mode in found:
            hits = search(col, embedder, text, k=3, mode=mode, lexical=lex)
            found[mode] += hits[0].prompt == prompts[doc]
            for h in hits:
                assert h.dense_rank is not None or h.lexical_rank is not None
                assert h.fused_score is not None and -1.0 <= h.score <= 1.0
                if mode == "dense":
                    assert h.lexical_rank is None and h.fused_score == pytest.approx(h.score)
                if mode == "lexical":
                    assert h.lexical_rank is not None and h.dense_rank is None
    assert found["hybrid"] >= found["dense"] + 5
    hit = search(col, embedder, queries()["q-err52"][0], k=1, mode="hybrid", lexical=lex)[0]
    assert hit.lexical_rank == 1 and hit.dense_rank != 1
    assert {"dense_rank", "lexical_rank", "fused_score"} <= set(hit.to_dict())
    for nothing in ("why?", "zzzqqq"):  # stop words only, unknown words: lexical finds nothing, hybrid = dense
        assert search(col, embedder, nothing, k=3, mode="lexical", lexical=lex) == []
        hybrid = search(col, embedder, nothing, k=3, mode="hybrid", lexical=lex)
        assert [h.id for h in hybrid] == [h.id for h in search(col, embedder, nothing, k=3)]
    with pytest.raises(UsageError):
        search(col, embedder, "x", mode="sparse", lexical=lex)
    with pytest.raises(UsageError):
        search(col, embedder, "x", mode="hybrid")


def test_filters_and_mmr_apply_to_the_fused_list(rare_store, embedder):
    col, lex, _, _ = rare_store
    text = queries()["q-part2"][0]
    for where in ({"category": "err"}, {"category": "part"}):
        hits = search(col, embedder, text, k=5, mode="hybrid", lexical=lex, where=where)
        assert len(hits) == 5 and all(h.metadata["category"] == where["category"] for h in hits)
    # a filter that leaves fewer matches than the lexical over-fetch still finds the lexical hit
    hits = search(col, embedder, text, k=3, mode="lexical", lexical=lex, where={"category": "part"})
    assert hits and hits[0].metadata["category"] == "part" and hits[0].lexical_rank == 1
    plain = search(col, embedder, text, k=5, mode="hybrid", lexical=lex)
    diverse = search(col, embedder, text, k=5, mode="hybrid", lexical=lex, mmr=True, fetch_k=20, mmr_lambda=0.3)
    assert len(diverse) == 5 and diverse[0].id == plain[0].id  # MMR keeps the most relevant first

    def redundancy(hits):
        e = [h.embedding for h in hits]
        return sum(float(a @ b) for i, a in enumerate(e) for b in e[i + 1 :])

    assert redundancy(diverse) < redundancy(plain)
    assert all(h.fused_score is not None for h in diverse)


def test_both_indexes_in_step_after_edit_and_prune(rare_store, embedder, monkeypatch):
    col, lex, _, corpus = rare_store
    assert in_step(col, lex) and len(lex.index(col)) == col.count()
    write_corpus(corpus, edits={"err52": "Error E-edited means the tray is open; close it."})
    with monkeypatch.context() as m:  # an in-step index is updated, not rebuilt from the collection
        m.setattr(lexical_mod, "rebuild", lambda *a, **k: pytest.fail("full rebuild"))
        s = ingest_paths([corpus], col, embedder, embed_field="both", progress=False, lexical=lex)
    assert s.updated == 1 and in_step(col, lex)
    full = lexical_mod.rebuild(col)
    for text, _ in list(queries().values())[:5] + [("tray is open E-edited", "")]:
        assert dict(lex.index(col).search(text, 100)) == pytest.approx(dict(full.search(text, 100)))
    hits = search(col, embedder, "tray is open close it E-edited", k=1, mode="lexical", lexical=lex)
    assert "E-edited" in hits[0].document
    write_corpus(corpus, drop={"err52", "who8"})
    s = ingest_paths([corpus], col, embedder, embed_field="both", progress=False, prune=True, lexical=lex)
    assert s.removed == 2 and in_step(col, lex)
    assert all(
        "E-edited" not in h.document for h in search(col, embedder, "E-edited", k=3, mode="lexical", lexical=lex)
    )


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import ingest.pipeline as pipeline
    from index.embed import load_embedder
    from index.lexical import LexicalIndex, LexicalStore
    from index.store import get_collection, open_client

    data_dir, corpus, point, prune = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    pipeline.WRITE_CHUNK = 8
    emb = load_embedder()
    col = get_collection(open_client(data_dir), "rare", model=emb.name, dim=emb.dim, embed_field="both")
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if point == "upsert":  # after the first chunk is written
        real = col.upsert
        col.upsert = lambda **kw: (real(**kw), die())
    elif point == "delete":
        real_delete = col.delete
        col.delete = lambda **kw: (real_delete(**kw), die())
    elif point == "save":  # the new version's arrays written, the manifest not switched yet
        real_save = LexicalIndex.save
        def save(self, root):
            import bm25s
            bm25s.BM25.save = lambda *a, **k: die()
            real_save(self, root)
        LexicalIndex.save = save
    lex = LexicalStore.for_collection(data_dir, col)
    pipeline.ingest_paths([corpus], col, emb, embed_field="both", progress=False, prune=prune, lexical=lex)
    """
)


@pytest.mark.parametrize("point", ["upsert", "delete", "save"])
def test_kill_9_at_any_point_then_rerun_leaves_both_in_step(rare_store, embedder, tmp_path: Path, point: str):
    _, lex, _, corpus = rare_store
    # a copy of the store: this process never opens it before the killed run (Chroma caches a store per path)
    store = tmp_path / f"killed-{point}"
    shutil.copytree(lex.root.parents[1], store)
    edits = {f"err{n}": f"Error changed {n}: the cover is open." for n in (52, 76, 80)}
    write_corpus(corpus, edits=edits, drop={"who8"})
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", KILLER, str(store), str(corpus), point, "1"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    killed = get_collection(open_client(store), "rare", model=embedder.name, dim=embedder.dim, embed_field="both")
    lex = LexicalStore.for_collection(store, killed)
    assert (lex.root / DIRTY).exists()  # the killed run left the lexical index marked stale
    s = ingest_paths([corpus], killed, embedder, embed_field="both", progress=False, prune=True, lexical=lex)
    assert s.rejected == 0 and in_step(killed, lex)
    assert killed.count() == len(lex.index(killed)) == 34
    hit = search(killed, embedder, "Error changed 76 cover", k=1, mode="lexical", lexical=lex)[0]
    assert "changed 76" in hit.document


def test_a_search_on_a_stale_lexical_index_returns_dense_hits_without_writing(
    rare_store, embedder, data_dir: Path, monkeypatch, caplog
):
    """A search never rebuilds the keyword index inline: it answers from the dense side, says so, and a thread
    rebuilds the index under the store's write lock (giving up while another writer holds it)."""
    col, lex, prompts, _ = rare_store
    text, doc = queries()["q-err52"]  # BM25 ranks it first, dense does not
    dense = [h.id for h in search(col, embedder, text, k=3, mode="dense")]
    builders: list[str] = []
    real = lexical_mod.rebuild
    monkeypatch.setattr(
        lexical_mod, "rebuild", lambda *a, **k: builders.append(threading.current_thread().name) or real(*a, **k)
    )
    shutil.rmtree(lex.root)
    fresh = LexicalStore.for_collection(data_dir, col)  # a new process: nothing cached
    with write_lock(data_dir, "another writer"):
        hits = search(col, embedder, text, k=3, mode="hybrid", lexical=fresh)
        assert fresh.wait_rebuilt(60)  # it found the store busy and gave up
    assert hits.notes == [STALE_NOTE] and fresh.missed and [h.id for h in hits] == dense
    assert all(h.lexical_rank is None and h.dense_rank for h in hits)
    assert not lex.root.exists() and builders == []  # nothing was written or rebuilt
    assert "the keyword index of 'rare' is stale: rebuilding it in the background" in caplog.text
    lexical = search(col, embedder, text, k=3, mode="lexical", lexical=fresh)  # the store is free: a rebuild starts
    assert lexical.notes == [STALE_NOTE] and [h.id for h in lexical] == dense
    assert fresh.wait_rebuilt(60) and builders and "MainThread" not in builders and in_step(col, fresh)
    hit = search(col, embedder, text, k=1, mode="hybrid", lexical=fresh)[0]
    assert hit.prompt == prompts[doc] and hit.lexical_rank == 1 and not fresh.missed
    (lex.root / MANIFEST).write_text("{not json")
    again = LexicalStore.for_collection(data_dir, col)
    assert search(col, embedder, text, k=1, mode="hybrid", lexical=again).notes == [STALE_NOTE]
    assert (
        again.wait_rebuilt(60)
        and search(col, embedder, text, k=1, mode="hybrid", lexical=again)[0].prompt == (prompts[doc])
    )
    # the collection changed behind the index's back (e.g. an older version ingested): a writer rebuilds it
    col.delete(ids=[collection_ids(col)[0]])
    assert len(again.index(col)) == col.count() and in_step(col, again)
    assert lexical_dir(data_dir, col) == lex.root
    versions = [p for p in lex.root.iterdir() if p.is_dir()]
    assert len(versions) == 1 and not list(lex.root.rglob("*.pkl"))


@pytest.mark.slow
def test_lexical_index_of_a_chroma_server_collection_is_rebuilt(tmp_path: Path, embedder):
    import chromadb

    from index.store import open_client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    server = subprocess.Popen(
        [chroma, "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:  # wait for the port: a poll with a deadline, not a fixed sleep
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        client = open_client(host="127.0.0.1", port=port)
        assert isinstance(client, chromadb.api.ClientAPI)
        col = get_collection(client, "rare", model=embedder.name, dim=embedder.dim, embed_field="both")
        corpus = tmp_path / "rare.jsonl"
        prompts = write_corpus(corpus)
        home = tmp_path / "home"
        ingest_paths([corpus], col, embedder, embed_field="both", progress=False)  # no lexical index yet
        lex = LexicalStore.for_collection(home, col)
        text, doc = queries()["q-err52"]
        assert search(col, embedder, text, k=1, mode="hybrid", lexical=lex).notes == [STALE_NOTE]
        assert lex.wait_rebuilt(60)  # no write lock for a server store: the background rebuild goes ahead
        assert search(col, embedder, text, k=1, mode="hybrid", lexical=lex)[0].prompt == prompts[doc]
        assert in_step(col, lex) and not (tmp_path / "srv" / "lexical").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
