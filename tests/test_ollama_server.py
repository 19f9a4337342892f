"""The fake Ollama server speaks the documented protocol (checked with raw HTTP and the real client)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import pytest

try:
    from tests.ollama_server import ModelBehavior, OllamaServer, canonical, echo_reply, tokenize
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from ollama_server import ModelBehavior, OllamaServer, canonical, echo_reply, tokenize

METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


@pytest.fixture
def server():
    with OllamaServer({"llama3.2": ModelBehavior(), "echo": ModelBehavior(reply=echo_reply)}) as s:
        yield s


HTTP = httpx.Client(timeout=5)  # one client: building an SSL context per request costs ~40 ms


def post(server: OllamaServer, path: str, body: object) -> httpx.Response:
    return HTTP.post(server.url + path, content=json.dumps(body))


def ndjson(resp: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def test_tokenize_round_trips() -> None:
    text = "Hello, world!  It's 3.14 -- ok?\n"
    assert "".join(tokenize(text)) == text
    assert canonical("llama3.2") == "llama3.2:latest" and canonical("hf.co/x/y:q4") == "hf.co/x/y:q4"


def test_root_version_tags_show_ps(server: OllamaServer) -> None:
    assert HTTP.get(server.url + "/").text == "Ollama is running"
    assert HTTP.get(server.url + "/api/version").json() == {"version": server.version}
    tags = HTTP.get(server.url + "/api/tags").json()["models"]
    assert {m["name"] for m in tags} == {"llama3.2:latest", "echo:latest"}
    assert set(tags[0]) >= {"name", "model", "modified_at", "size", "digest", "details"}
    show = post(server, "/api/show", {"model": "llama3.2"}).json()
    assert set(show) >= {"modelfile", "parameters", "template", "details", "model_info", "capabilities"}
    client = ollama.Client(host=server.url)
    assert client.show("llama3.2").capabilities == ["completion"]
    client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi there"}])
    assert [m.model for m in client.ps().models] == ["llama3.2:latest"]


def test_chat_streams_ndjson_by_default(server: OllamaServer) -> None:
    msgs = [{"role": "user", "content": "Why is grass green?"}]
    r = post(server, "/api/chat", {"model": "llama3.2", "messages": msgs})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    parts = ndjson(r)
    assert len(parts) > 3 and all(p["done"] is False for p in parts[:-1])
    assert all(p["message"]["role"] == "assistant" and "created_at" in p for p in parts)
    last = parts[-1]
    assert last["done"] is True and last["done_reason"] == "stop" and last["message"]["content"] == ""
    assert all(isinstance(last[k], int) for k in METRICS)
    assert last["eval_count"] == len(parts) - 1
    assert last["total_duration"] >= last["load_duration"]


def test_stream_false_gives_one_object(server: OllamaServer) -> None:
    body = {
        "model": "llama3.2",
        "stream": False,
        "options": {"seed": 7},
        "messages": [{"role": "user", "content": "Why is grass green?"}],
    }
    r = post(server, "/api/chat", body)
    assert r.headers["content-type"].startswith("application/json")
    obj = r.json()
    assert obj["done"] is True and obj["model"] == "llama3.2:latest" and obj["message"]["content"]
    streamed = ndjson(post(server, "/api/chat", {**body, "stream": True}))
    assert "".join(p["message"]["content"] for p in streamed) == obj["message"]["content"]


def test_generate_endpoint(server: OllamaServer) -> None:
    obj = post(server, "/api/generate", {"model": "llama3.2", "prompt": "Why?", "stream": False}).json()
    assert obj["response"] and obj["done"] and "context" in obj and all(k in obj for k in METRICS)
    parts = ndjson(post(server, "/api/generate", {"model": "llama3.2", "prompt": "Tell me about rivers"}))
    assert parts[-1]["done"] and parts[-1]["response"] == "" and "".join(p["response"] for p in parts)
    loaded = post(server, "/api/generate", {"model": "llama3.2"}).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load" and loaded["response"] == ""


def test_options_num_predict_stop_seed(server: OllamaServer) -> None:
    client = ollama.Client(host=server.url)
    msgs = [{"role": "user", "content": "Describe the ocean tides"}]
    short = client.chat(model="llama3.2", messages=msgs, options={"num_predict": 4, "seed": 1})
    assert short.done_reason == "length" and short.eval_count == 4
    assert len(tokenize(short.message.content)) == 4
    full = client.chat(model="llama3.2", messages=msgs, options={"seed": 1})
    again = client.chat(model="llama3.2", messages=msgs, options={"seed": 1})
    other = [client.chat(model="llama3.2", messages=msgs, options={"seed": s}).message.content for s in range(2, 6)]
    assert full.message.content == again.message.content and any(o != full.message.content for o in other)
    word = full.message.content.split()[3]
    stopped = client.chat(model="llama3.2", messages=msgs, options={"seed": 1, "stop": [word]})
    assert word not in stopped.message.content and full.message.content.startswith(stopped.message.content)


def test_embed(server: OllamaServer) -> None:
    one = post(server, "/api/embed", {"model": "llama3.2", "input": "hello"}).json()
    assert len(one["embeddings"]) == 1 and one["model"] == "llama3.2:latest"
    two = ollama.Client(host=server.url).embed(model="llama3.2", input=["hello", "world"])
    assert len(two.embeddings) == 2 and two.embeddings[0] == one["embeddings"][0]
    assert math.isclose(sum(x * x for x in two.embeddings[1]), 1.0, rel_tol=1e-9)
    assert post(server, "/api/embed", {"model": "llama3.2", "input": 3}).status_code == 400


def test_logprobs(server: OllamaServer) -> None:
    client = ollama.Client(host=server.url)
    msgs = [{"role": "user", "content": "Name a colour"}]
    plain = client.chat(model="llama3.2", messages=msgs, options={"seed": 3})
    assert plain.logprobs is None
    r = client.chat(model="llama3.2", messages=msgs, options={"seed": 3}, logprobs=True, top_logprobs=3)
    assert "".join(lp.token for lp in r.logprobs) == r.message.content
    assert all(lp.logprob <= 0 and len(lp.top_logprobs) == 3 for lp in r.logprobs)
    parts = list(client.chat(model="llama3.2", messages=msgs, options={"seed": 3}, logprobs=True, stream=True))
    assert [lp.logprob for p in parts for lp in (p.logprobs or [])] == [lp.logprob for lp in r.logprobs]


def test_errors_as_ollama_returns_them(server: OllamaServer) -> None:
    r = post(server, "/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json() == {"error": 'model "nope" not found, try pulling it first'}
    for path in ("/api/generate", "/api/show", "/api/embed"):
        assert post(server, path, {"model": "nope", "prompt": "x", "input": "x"}).status_code == 404
    assert post(server, "/api/chat", {"messages": []}).json() == {"error": "model is required"}
    bad = HTTP.post(server.url + "/api/chat", content=b"{not json")
    assert bad.status_code == 400 and "error" in bad.json()
    typed = post(
        server,
        "/api/chat",
        {"model": "llama3.2", "options": {"num_predict": "ten"}, "messages": [{"role": "user", "content": "x"}]},
    )
    assert typed.status_code == 400
    assert typed.json()["error"] == 'option "num_predict" must be of type integer'
    assert HTTP.get(server.url + "/api/nothing").status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=server.url).chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404


def test_context_overflow_truncates_or_rejects(server: OllamaServer) -> None:
    long = " ".join(["word"] * 50)
    body = {
        "model": "llama3.2",
        "stream": False,
        "options": {"num_ctx": 20},
        "messages": [{"role": "user", "content": long}],
    }
    assert post(server, "/api/chat", body).json()["prompt_eval_count"] == 20  # silently truncated
    server.behavior("llama3.2").strict_context = True
    r = post(server, "/api/chat", body)
    assert r.status_code == 400 and "exceeds the context length" in r.json()["error"]


def test_records_requests_and_concurrency(server: OllamaServer) -> None:
    server.behavior("llama3.2").delay = 0.6
    body = {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "hello"}]}
    threads = [threading.Thread(target=post, args=(server, "/api/chat", body)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.max_in_flight == 5 and server.in_flight == 0
    assert server.bodies("/api/chat") == [body] * 5


def test_injected_failures_drops_and_slow_first_byte(server: OllamaServer) -> None:
    b = server.behavior("llama3.2")
    b.fail_times, b.fail_status = 2, 503
    msgs = [{"role": "user", "content": "a b c d e f"}]
    client = ollama.Client(host=server.url, timeout=1.0)
    for _ in range(2):
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="llama3.2", messages=msgs)
        assert info.value.status_code == 503
    assert client.chat(model="llama3.2", messages=msgs).message.content
    b.drop_times = 1
    with pytest.raises(httpx.RemoteProtocolError):
        list(client.chat(model="llama3.2", messages=msgs, stream=True))
    assert client.chat(model="llama3.2", messages=msgs).message.content
    b.first_byte_delay = 2.0
    with pytest.raises(httpx.ReadTimeout):
        list(client.chat(model="llama3.2", messages=msgs, stream=True))


def test_placeholder_and_echo_replies(server: OllamaServer) -> None:
    client = ollama.Client(host=server.url)
    prompt = "Explain the water cycle"
    assert client.generate(model="echo", prompt=prompt).response == prompt
    server.behavior("llama3.2").reply = "[INSERT ANSWER HERE]"
    assert client.generate(model="llama3.2", prompt=prompt).response == "[INSERT ANSWER HERE]"


def test_standalone_mode() -> None:
    script = Path(__file__).with_name("ollama_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--models", "m1,m2", "--delay", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                names = [m["name"] for m in httpx.get(url + "/api/tags").json()["models"]]
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        assert names == ["m1:latest", "m2:latest"]
    finally:
        proc.terminate()
        proc.wait(timeout=5)
