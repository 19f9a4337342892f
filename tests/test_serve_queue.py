"""The model queue counts a request from admission, before its retrieval: with queue_depth 1, of 8 requests at
once 2 are answered and 6 refused at once with 503, and a place whose client left early is given back.

Concurrency is forced, not hoped for: the assistant's retrieval step waits on a gate the test opens."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_serve_limits import queue, wait_for

from rag.serve import ServeOptions, start_in_thread


@pytest.fixture
def gated(make_assistant):
    """(a running server with queue_depth 1, the gate its retrieval waits on, the retrievals begun)."""
    assistant = make_assistant()
    gate = threading.Event()
    begun: list[str] = []
    inner = assistant.stream

    def stream(question, **kwargs):
        begun.append(question)
        gate.wait(60)
        return inner(question, **kwargs)

    assistant.stream = stream
    with start_in_thread(assistant, ServeOptions(queue_depth=1)) as running:
        try:
            yield running, gate, begun
        finally:
            gate.set()


def ask(url: str, i: int, stream: bool = False, timeout: float = 60) -> httpx.Response:
    body = {
        "model": "shvayambhu",
        "user": f"q{i}",
        "stream": stream,
        "messages": [{"role": "user", "content": "Rain?"}],
    }
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout)


def test_eight_at_once_with_depth_one_are_two_answers_and_six_503s(gated, fake_ollama):
    running, gate, begun = gated
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, running.url, i) for i in range(8)]
        wait_for(lambda: sum(f.done() for f in futures) == 6, "six requests to be refused", timeout=20)
        assert len(begun) == 2 and queue(running) == {"busy": False, "waiting": 2}  # both still retrieving
        refused = [f.result() for f in futures if f.done()]
        assert all(r.status_code == 503 and r.headers["Retry-After"] == "5" for r in refused)
        assert all(r.json()["error"]["code"] == "queue_full" for r in refused)
        gate.set()
    responses = [f.result() for f in futures]
    assert sorted(r.status_code for r in responses) == [200] * 2 + [503] * 6
    assert all(r.json()["choices"][0]["message"]["content"] for r in responses if r.status_code == 200)
    assert len(fake_ollama.bodies("/api/chat")) == 2 and queue(running) == {"busy": False, "waiting": 0}


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_gone_before_its_answer_began_gives_its_place_back(gated, stream):
    running, gate, begun = gated
    with pytest.raises(httpx.ReadTimeout):
        ask(running.url, 0, stream=stream, timeout=1.0)  # gives up while its retrieval waits
    assert queue(running)["waiting"] == 1
    gate.set()
    wait_for(lambda: queue(running) == {"busy": False, "waiting": 0}, "the place to be given back")
    assert ask(running.url, 1).status_code == 200 and ask(running.url, 2).status_code == 200
    assert queue(running) == {"busy": False, "waiting": 0}
