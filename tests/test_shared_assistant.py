"""One assistant shared by a server's threads: its client and embedding model are built once whichever threads
come first, a seeded request draws from its own key while other requests decode, and an answer recalls the
session's memory once."""

from __future__ import annotations

import threading
import time

import pytest

import rag.api
from rag.backends.base import GenerationOptions
from rag.consciousness.memory import MemoryStream

THREADS = 8


def counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, pause: float = 0.0) -> list[str]:
    """Replace `owner.name` with a wrapper that records the calling thread (after `pause` s, to widen a race)."""
    calls: list[str] = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(threading.current_thread().name)
        time.sleep(pause)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_first_use_from_many_threads_builds_one_client_and_one_embedder(make_assistant, monkeypatch) -> None:
    clients = counting(monkeypatch, rag.api, "open_client", pause=0.2)
    models = counting(monkeypatch, rag.api, "load_embedder", pause=0.2)
    a = make_assistant()
    start = threading.Barrier(THREADS)
    got: list[tuple[object, object]] = []

    def first_use() -> None:
        start.wait(timeout=30)
        got.append((a.embedder, a.client))  # the embedder first: it opens the client itself (precision auto)

    threads = [threading.Thread(target=first_use, name=f"request-{i}") for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == THREADS
    assert len(clients) == 1 and len(models) == 1, (clients, models)
    assert len({id(e) for e, _ in got}) == 1 and len({id(c) for _, c in got}) == 1


def test_assistants_of_one_store_opened_at_once_in_one_process_all_work(seed_store, tmp_path) -> None:
    """Chroma's per-folder system cache is filled without a lock: the CLI's retrieval warm-up thread of one command
    and a second assistant opening the same store at that moment used to fail, reading "the store is damaged"."""
    import shutil

    from index.store import close_stores, open_client

    failures: list[str] = []
    for round in range(10):
        home = tmp_path / f"home{round}"
        shutil.copytree(seed_store[0], home)

        def first_open(home=home) -> None:
            try:
                assert open_client(home).get_collection("corpus").count() > 0
            except Exception as e:  # noqa: BLE001 - collected, so every thread's failure is reported
                failures.append(f"{e.__class__.__name__}: {e}")

        threads = [threading.Thread(target=first_open) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        close_stores(keep={str(seed_store[0] / "chroma")})
    assert not failures, failures[:2]


def test_an_answer_recalls_the_sessions_memory_once(make_assistant, monkeypatch) -> None:
    a = make_assistant()
    a.ask("My name is Ada and I grow basil.", session="ada")
    recalls = counting(monkeypatch, MemoryStream, "recall")
    lookups = counting(monkeypatch, rag.api.Shvayambhu, "memory")
    answer = a.ask("What do I grow?", session="ada")
    assert answer.answer and len(recalls) == 1 and len(lookups) == 1, (recalls, lookups)
    stream = a.stream("And my name?", session="ada")
    assert "".join(stream) and len(recalls) == 2 and len(lookups) == 2


STORY = [{"role": "user", "content": "Write one sentence about anything you like."}]  # many likely answers


@pytest.fixture(scope="module")
def mlx_backend():
    from rag.backends.mlx import load_mlx_backend

    return load_mlx_backend()


def test_a_seed_gives_the_same_answer_while_another_request_decodes_on_its_thread(mlx_backend) -> None:
    """MLX keeps its generator (and its streams) per thread, and a server's worker thread serves several requests
    in turn: another seeded request that decodes between this stream's pieces used to re-seed the generator this
    one draws from. With a key of its own, the seeded answer is the one it gives alone."""
    hot = GenerationOptions(max_tokens=8, temperature=1.0, top_p=0.95, top_k=40, seed=11)
    alone = mlx_backend.generate(STORY, hot).text
    other = GenerationOptions(max_tokens=2, temperature=1.0, seed=12)
    stream = mlx_backend.stream(STORY, hot)
    chunks = [next(stream)]
    for chunk in stream:
        chunks.append(chunk)
        mlx_backend.generate(STORY, other)  # another request takes its turn on this thread
    assert len(chunks) > 2 and chunks[-1].done and chunks[-1].generation.text == alone
    assert mlx_backend.generate(STORY, GenerationOptions(max_tokens=8, temperature=1.0, seed=5)).text != alone
