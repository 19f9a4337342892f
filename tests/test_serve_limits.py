"""`rag.serve` under pressure and at its edges: concurrent sessions, the model queue, client disconnects,
the API key, binding beyond loopback, and size limits. The backend is the fake Ollama server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import ollama
import openai
import pytest

from index.errors import UsageError
from rag.serve import ServeOptions, start_in_thread
from rag.serve.options import check_bind, is_loopback

KEY = "ollama/llama3.2"  # the queue key of the fake backend
LONG = " ".join(f"Point {i} is worth a look." for i in range(500))  # with a token delay: minutes of answer


@pytest.fixture
def serve(make_assistant):
    """Factory: serve(**ServeOptions fields) -> a running server over a fresh assistant; stopped at the end."""
    with ExitStack() as stack:

        def make(**options):
            return stack.enter_context(start_in_thread(make_assistant(), ServeOptions(**options)))

        yield make


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    """Wait until `check()` is true (a condition, not a fixed sleep); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def queue(running) -> dict:
    return running.app.state.engine.queue.snapshot().get(KEY, {"busy": False, "waiting": 0})


def open_stream(client: httpx.Client, url: str, question: str, session: str) -> httpx.Response:
    body = {"model": "shvayambhu", "stream": True, "user": session, "messages": [{"role": "user", "content": question}]}
    return client.send(client.build_request("POST", url + "/v1/chat/completions", json=body), stream=True)


def test_eight_concurrent_sessions_keep_their_memories_apart(serve):
    running = serve()
    words = ["quokka", "zephyr", "marimba", "tundra", "sitar", "obsidian", "lagoon", "kestrel"]

    def ask(i: int, question: str) -> dict:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(
            model="shvayambhu", user=f"user-{i}", messages=[{"role": "user", "content": question}]
        )
        assert r.choices[0].message.content
        return r.model_extra["shvayambhu"]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ask(i, f"Remember that my secret word is {words[i]}."), range(8)))
        second = list(pool.map(lambda i: ask(i, f"What was my secret word, the {words[i][0]} one?"), range(8)))
    for i, ev in enumerate(second):
        assert ev["session"] == f"user-{i}"
        recalled = " ".join(m["text"] for m in ev["memories"])
        assert words[i] in recalled and all(w not in recalled for w in words if w != words[i]), (i, recalled)
        stored = httpx.get(f"{running.url}/v1/sessions/user-{i}/memories").json()["memories"]
        text = " ".join(m["text"] for m in stored)
        assert len(stored) == 2 and all(w not in text for w in words if w != words[i])


def test_a_disconnect_stops_the_generation_and_frees_the_model(serve, fake_ollama):
    running = serve()
    fake_ollama.behavior("llama3.2").reply = LONG
    fake_ollama.behavior("llama3.2").token_delay = 0.05
    with httpx.Client(timeout=30) as client:
        r = open_stream(client, running.url, "Tell me a very long story.", "gone")
        for line in r.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the first piece of the answer arrived
        assert queue(running)["busy"]
        r.close()
    wait_for(lambda: not queue(running)["busy"], "the model lock to be freed")
    wait_for(lambda: fake_ollama.in_flight == 0, "the backend request to be closed")
    assert httpx.get(running.url + "/v1/sessions/gone/memories").json()["memories"] == []  # never finished
    fake_ollama.behavior("llama3.2").reply = None
    fake_ollama.behavior("llama3.2").token_delay = 0.0
    ok = httpx.post(
        running.url + "/v1/chat/completions",
        timeout=30,
        json={"model": "shvayambhu", "messages": [{"role": "user", "content": "What is rain?"}]},
    )
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_a_disconnect_before_a_non_streamed_answer_stops_it_too(serve, fake_ollama):
    running = serve()
    fake_ollama.behavior("llama3.2").reply = LONG
    fake_ollama.behavior("llama3.2").token_delay = 0.05
    body = json.dumps({"model": "shvayambhu", "user": "left", "messages": [{"role": "user", "content": "A saga?"}]})
    sock = socket.create_connection(("127.0.0.1", running.port))
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode())
    wait_for(lambda: queue(running)["busy"] and fake_ollama.in_flight == 1, "the generation to start")
    sock.close()
    wait_for(lambda: not queue(running)["busy"] and fake_ollama.in_flight == 0, "the generation to stop")
    assert httpx.get(running.url + "/v1/sessions/left/memories").json()["memories"] == []


def test_full_queue_is_503_and_search_does_not_wait(serve, fake_ollama):
    running = serve(queue_depth=1)
    fake_ollama.behavior("llama3.2").reply = LONG
    fake_ollama.behavior("llama3.2").token_delay = 0.05
    with httpx.Client(timeout=30) as client:
        first = open_stream(client, running.url, "Tell me a long story.", "a")
        wait_for(lambda: queue(running)["busy"], "the first request to hold the model")
        second = open_stream(client, running.url, "Tell me another.", "b")
        wait_for(lambda: queue(running)["waiting"] == 1, "the second request to wait")
        third = client.post(
            running.url + "/v1/chat/completions",
            json={"model": "shvayambhu", "messages": [{"role": "user", "content": "And one more."}]},
        )
        assert third.status_code == 503 and third.headers["Retry-After"] == "5"
        assert "busy" in third.json()["error"]["message"] and third.json()["error"]["code"] == "queue_full"
        olla = client.post(
            running.url + "/api/chat",
            json={"model": "shvayambhu", "messages": [{"role": "user", "content": "Hi there?"}]},
        )
        assert olla.status_code == 503 and "busy" in olla.json()["error"]
        hits = client.post(running.url + "/v1/search", json={"query": "immune system", "k": 2})
        assert hits.status_code == 200 and len(hits.json()) == 2
        assert queue(running) == {"busy": True, "waiting": 1} and fake_ollama.in_flight == 1  # still generating
        first.close()
        second.close()
    wait_for(lambda: not queue(running)["busy"] and fake_ollama.in_flight == 0, "both requests to be released")


def test_api_key_is_required_everywhere_but_health_and_the_page(serve):
    running = serve(api_key="s3cret-key")
    url = running.url
    r = httpx.get(url + "/v1/models")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/api/tags", headers={"Authorization": "Bearer wrong"}).json()["error"]
    assert httpx.post(url + "/v1/search", json={"query": "x"}).status_code == 401
    assert httpx.get(url + "/healthz").status_code == 200 and httpx.get(url + "/").status_code == 200
    good = {"Authorization": "Bearer s3cret-key"}
    assert httpx.get(url + "/v1/models", headers=good).status_code == 200
    client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret-key", max_retries=0)
    assert client.chat.completions.create(model="shvayambhu", messages=[{"role": "user", "content": "What is ice?"}])
    assert [m.model for m in ollama.Client(host=url, headers=good).list().models][0] == "shvayambhu"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_no_key_needed_on_loopback_but_refused_beyond(make_assistant):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "key")
    with pytest.raises(UsageError, match="--api-key"):
        check_bind("0.0.0.0", None)
    with pytest.raises(UsageError), start_in_thread(make_assistant(), host="0.0.0.0"):
        pass
    env = {k: v for k, v in os.environ.items() if k != "SHVAYAMBHU_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "rag.serve", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0 without an API key" in proc.stderr


def test_oversize_requests_are_413_saying_the_limit(serve):
    running = serve(max_upload_bytes=2000)
    url = running.url
    big = "why " * 9000  # 36,000 bytes
    r = httpx.post(
        url + "/v1/chat/completions", json={"model": "shvayambhu", "messages": [{"role": "user", "content": big}]}
    )
    assert r.status_code == 413 and "the limit is 32,768 bytes" in r.json()["error"]["message"]
    o = httpx.post(url + "/api/generate", json={"model": "shvayambhu", "prompt": big})
    assert o.status_code == 413 and "32,768" in o.json()["error"]
    history = [{"role": "user", "content": "x" * 60000}, {"role": "assistant", "content": "y"}] * 20
    h = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "shvayambhu", "messages": history + [{"role": "user", "content": "hi"}]},
    )
    assert h.status_code == 413 and "1,048,576 bytes" in h.json()["error"]["message"]
    line = json.dumps({"prompt": "p" * 100, "response": "r" * 100}) + "\n"
    up = httpx.post(url + "/v1/ingest", content=(line * 20).encode(), headers={"Content-Type": "application/jsonl"})
    assert up.status_code == 413 and "2,000 bytes" in up.json()["error"]["message"]
    jsonl = {"Content-Type": "application/jsonl"}
    chunked = httpx.post(url + "/v1/ingest", content=iter([line.encode()] * 20), headers=jsonl)  # no Content-Length
    assert chunked.status_code == 413 and "2,000 bytes" in chunked.json()["error"]["message"]
    assert httpx.post(url + "/v1/search", json={"query": "q" * 40000}).status_code == 413


def test_backend_failures_come_back_in_each_protocols_error_shape(serve, fake_ollama):
    running = serve()
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
    msgs = [{"role": "user", "content": "What is thunder?"}]
    fake_ollama.behavior("llama3.2").fail_times = 3
    with pytest.raises(openai.APIStatusError) as e:  # before any text: a 503 with OpenAI's error body
        client.chat.completions.create(model="shvayambhu", messages=msgs)
    assert e.value.status_code == 503 and e.value.body["code"] == "backend_unavailable"
    with pytest.raises(openai.APIError, match="llama runner"):  # streamed: the error arrives as an event
        list(client.chat.completions.create(model="shvayambhu", messages=msgs, stream=True))
    with pytest.raises(ollama.ResponseError, match="llama runner"):
        list(ollama.Client(host=running.url).chat(model="shvayambhu", messages=msgs, stream=True))
    assert not queue(running)["busy"]  # a failed generation frees the model too
    ok = client.chat.completions.create(model="shvayambhu", messages=msgs)
    assert ok.choices[0].message.content


def test_cors_is_off_unless_configured(serve):
    pre = {"Origin": "http://notes.example", "Access-Control-Request-Method": "POST"}
    off = serve()
    assert "access-control-allow-origin" not in httpx.options(off.url + "/v1/search", headers=pre).headers
    on = serve(cors_origins=["http://notes.example"])
    r = httpx.options(on.url + "/v1/search", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://notes.example"
