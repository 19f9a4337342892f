"""Bad input is a 400 naming the field, in each protocol's error shape, on a connection that stays open: JSON
nested 1,000 deep, a lone surrogate, a model name that is a number, stream_options that is not an object.
Through the real openai and ollama clients where a client can send it, plain HTTP otherwise."""

from __future__ import annotations

import json
import logging

import httpx
import ollama
import openai
import pytest

from rag.serve import ServeOptions, start_in_thread

JSON_ROUTES = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/search",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/show",
]
MSGS = [{"role": "user", "content": "What is rain?"}]


@pytest.fixture
def served(make_assistant, caplog):
    caplog.set_level(logging.ERROR)
    assistant = make_assistant()
    with start_in_thread(assistant, ServeOptions()) as running:
        running.assistant = assistant
        yield running
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]  # no "Exception in ASGI application"


def message(path: str, r: httpx.Response) -> str:
    """The error's text in the route's own shape: Ollama's {"error": "..."}, OpenAI's {"error": {...}}."""
    body = r.json()
    if path.startswith("/api/"):
        assert isinstance(body["error"], str), body
        return body["error"]
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]["message"]


def local_port(r: httpx.Response) -> int:
    return r.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_deep_nesting_is_400_on_every_route_and_the_connection_stays(served):
    deep = "[" * 1000 + "]" * 1000
    tricky = '[{"\\' * 100  # brackets, quotes and backslashes inside a string do not count
    with httpx.Client(base_url=served.url, timeout=30) as client:
        first = client.get("/v1/models")
        for path in JSON_ROUTES:
            body = '{"model": "shvayambhu", "prompt": "x", "input": "x", "query": "x", "deep": ' + deep + "}"
            r = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and "nested more than 64 levels" in message(path, r), (path, r.text)
            assert local_port(r) == local_port(first)  # the same keep-alive connection
        ok = client.post("/v1/search", json={"query": "rain", "k": 1, "where": None, "note": tricky})
        assert ok.status_code == 200 and local_port(ok) == local_port(first)
        fine = client.post("/v1/search", json={"query": "rain", "k": 1, "x": [[[[[[[[[[1]]]]]]]]]]})
        assert fine.status_code == 200


def escaped(url: str, body: dict) -> httpx.Response:
    """POST `body` as JSON with every non-ASCII character escaped: how a lone surrogate travels (the openai,
    ollama and httpx clients all encode the body as UTF-8 first, which a lone surrogate cannot be)."""
    return httpx.post(url, content=json.dumps(body).encode("ascii"), headers={"Content-Type": "application/json"})


def test_a_lone_surrogate_is_400_naming_the_field(served):
    url = served.url
    ask = [{"role": "user", "content": "rain \ud800?"}]
    r = escaped(url + "/v1/chat/completions", {"model": "shvayambhu", "messages": ask})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"
    assert "lone surrogate at character 5" in message("/v1/chat/completions", r)
    r = escaped(url + "/v1/embeddings", {"input": ["fine", "\udfff"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input.1"
    for path, body, field in (
        ("/api/chat", {"model": "shvayambhu", "messages": ask}, "messages.0.content"),
        ("/api/generate", {"model": "shvayambhu", "prompt": "\ud800"}, "prompt"),
        ("/api/embed", {"model": "shvayambhu", "input": "\ud800"}, "input"),
        ("/api/show", {"model": "shvayambhu\ud800"}, "model"),
        ("/v1/search", {"query": "\ud800"}, "query"),
        ("/v1/search", {"query": "x", "where": {"category": "\ud800"}}, "where"),
        ("/v1/chat/completions", {"model": "shvayambhu", "messages": MSGS, "user": "\udbff"}, "user"),
    ):
        r = escaped(url + path, body)
        assert r.status_code == 400 and message(path, r).startswith(field), (path, r.text)
        assert "surrogate" in message(path, r) or path == "/v1/search", (path, r.text)
    assert served.assistant.sessions() == []  # nothing was remembered


def test_wrong_types_are_400_naming_the_field(served):
    oa = openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model=123, messages=MSGS)  # type: ignore[arg-type]
    assert e.value.body["param"] == "model" and "string" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        list(oa.chat.completions.create(model="shvayambhu", messages=MSGS, stream=True, stream_options="x"))  # type: ignore[arg-type]
    assert e.value.body["param"] == "stream_options"
    for bad, field in (
        ({"temperature": True}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a"] * 9}, "stop"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages.0.content"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ):
        r = httpx.post(served.url + "/v1/chat/completions", json={"model": "shvayambhu", "messages": MSGS, **bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, (bad, r.text)
    for path, body, field in (
        ("/api/chat", {"model": 123, "messages": MSGS}, "model"),
        ("/api/generate", {"model": "shvayambhu", "prompt": 7}, "prompt"),
        (
            "/api/chat",
            {"model": "shvayambhu", "messages": MSGS, "options": {"num_predict": "many"}},
            "options.num_predict",
        ),
        ("/api/chat", {"model": "shvayambhu", "messages": MSGS, "options": {"num_predict": 0}}, "options.num_predict"),
        ("/api/chat", {"model": "shvayambhu", "messages": MSGS, "options": "fast"}, "options"),
        ("/api/chat", {"model": "shvayambhu", "messages": MSGS, "stream": "yes"}, "stream"),
        ("/api/embed", {"model": "shvayambhu", "input": [1, 2]}, "input.0"),
        ("/api/show", {"model": ["shvayambhu"]}, "model"),
        ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ("/v1/embeddings", {"input": []}, "input"),
        ("/v1/search", {"query": "x", "k": "3"}, "k"),
        ("/v1/search", {"query": "x", "k": 0}, "k"),
        ("/v1/search", {"query": "   "}, "query"),
        ("/v1/search", {"query": "x", "mode": "sparkly"}, "mode"),
        ("/v1/search", [1, 2], "body"),
    ):
        r = httpx.post(served.url + path, json=body)
        assert r.status_code == 400 and message(path, r).startswith(field + ":"), (path, body, r.text)
    with pytest.raises(ollama.ResponseError) as o:
        ollama.Client(host=served.url).chat(model="shvayambhu", messages=MSGS, options={"temperature": -1})
    assert o.value.status_code == 400 and "options.temperature" in o.value.error


def test_ingest_refuses_lone_surrogates_and_deep_json_record_by_record(served):
    records = [
        {"prompt": "What is the Quillon moon?", "response": "A moon \ud83c\udf19 of Quillon."},  # a valid pair
        {"prompt": "What is the Vexa moon?", "response": "A moon with a lone \udc00 half."},
        {"prompt": "What is the Orra moon?", "response": "A small moon.", "category": "sci\ud800"},
        {"prompt": "What is the Brel moon?", "response": "A far moon.", "meta": {"k\udfff": 1}},
    ]
    body = "\n".join(json.dumps(r) for r in records) + "\n" + "[" * 1000 + "\n"
    r = httpx.post(
        served.url + "/v1/ingest?name=moons.jsonl",
        content=body.encode("ascii"),
        headers={"Content-Type": "application/jsonl"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["added"] == 1 and d["rejected"] == 4
    reasons = {x["line"]: x["reason"] for x in d["rejections"]}
    assert "field 'response' holds a lone surrogate \\udc00" in reasons[2]
    assert "field 'category'" in reasons[3] and "field name 'meta.k" in reasons[4] and "nested" in reasons[5]
    hit = served.assistant.search("What is the Quillon moon?", 1)[0]
    assert hit.response == "A moon 🌙 of Quillon."
    deep = '{"prompt": "x", "response": ' + "[" * 1000 + "]" * 1000 + "}"
    r = httpx.post(served.url + "/v1/ingest?name=deep.json", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and "nested too deeply" in r.json()["rejections"][0]["reason"]
