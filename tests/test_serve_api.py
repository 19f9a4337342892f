"""`rag.serve` through real clients: openai, ollama, LangChain's ChatOpenAI/ChatOllama, and plain HTTP for
our own routes; the assistant is real (seed store, embedding model), the backend is the fake Ollama server."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

QUESTION = "How do vaccines train the immune system?"


def oa(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def user_prompts(fake_ollama) -> list[str]:
    return [b["messages"][-1]["content"] for b in fake_ollama.bodies("/api/chat")]


def test_openai_non_streamed_carries_the_evidence(served, fake_ollama):
    resp = oa(served).chat.completions.create(model="shvayambhu", messages=[{"role": "user", "content": QUESTION}])
    text = resp.choices[0].message.content
    assert text and resp.choices[0].finish_reason == "stop" and resp.model == "shvayambhu"
    ev = resp.model_extra["shvayambhu"]
    assert ev["backend"] == "ollama" and ev["model"] == "llama3.2" and 0 <= ev["confidence"] <= 1
    assert isinstance(ev["low_confidence"], bool) and ev["sources"], ev
    assert all({"id", "score", "prompt", "response"} <= set(s) for s in ev["sources"])
    kinds = {w["kind"] for w in ev["workspace"]["winners"]}
    assert "exemplar" in kinds and "losers" in ev["workspace"]
    assert QUESTION in user_prompts(fake_ollama)[-1]  # the question reached the backend inside the prompt
    assert resp.usage.completion_tokens > 0


def test_openai_stream_gives_the_same_text_and_ends_with_the_evidence(served):
    client = oa(served)
    msgs = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(model="shvayambhu", messages=msgs, user="s-whole")
    chunks = list(client.chat.completions.create(model="shvayambhu", messages=msgs, user="s-stream", stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "shvayambhu" in chunks[-1].model_extra and not any("shvayambhu" in c.model_extra for c in chunks[:-1])
    assert chunks[-1].model_extra["shvayambhu"]["session"] == "s-stream"


def test_raw_sse_ends_with_done_and_usage_when_asked(served):
    body = {
        "model": "shvayambhu",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": QUESTION}],
    }
    with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0 and last["shvayambhu"]["sources"]


def test_earlier_turns_reach_the_prompt_and_session_header_wins(served, fake_ollama):
    msgs = [
        {"role": "system", "content": "ignored: the self-model is the system prompt"},
        {"role": "user", "content": "Tell me about photosynthesis in kelp forests."},
        {"role": "assistant", "content": "Kelp turns sunlight into sugar underwater."},
        {"role": "user", "content": [{"type": "text", "text": "And at night?"}]},
    ]
    r = httpx.post(
        served.url + "/v1/chat/completions",
        json={"model": "shvayambhu", "messages": msgs, "user": "u1"},
        headers={"X-Shvayambhu-Session": "from-header"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    sent = json.dumps(fake_ollama.bodies("/api/chat")[-1]["messages"])
    assert "kelp forests" in sent and "sugar underwater" in sent and "And at night?" in sent
    assert r.json()["shvayambhu"]["session"] == "from-header"
    mems = httpx.get(served.url + "/v1/sessions/from-header/memories").json()["memories"]
    assert any("And at night?" in m["text"] for m in mems)
    assert httpx.get(served.url + "/v1/sessions/u1/memories").json()["memories"] == []


def test_request_sampling_options_reach_the_backend(served, fake_ollama):
    msgs = [{"role": "user", "content": QUESTION}]
    r = oa(served).chat.completions.create(model="shvayambhu", messages=msgs, max_tokens=3, temperature=0.2, seed=9)
    sent = fake_ollama.bodies("/api/chat")[-1]["options"]
    assert sent["num_predict"] == 3 and sent["temperature"] == 0.2 and sent["seed"] == 9
    assert r.choices[0].finish_reason == "length"
    client = ollama.Client(host=served.url)
    client.chat(model="shvayambhu", messages=msgs, options={"num_predict": 2, "top_k": 5, "stop": ["\n\n"]})
    sent = fake_ollama.bodies("/api/chat")[-1]["options"]
    assert sent["num_predict"] == 2 and sent["top_k"] == 5 and sent["stop"] == ["\n\n"]
    bad = httpx.post(served.url + "/v1/chat/completions", json={"messages": msgs, "temperature": "hot"})
    assert bad.status_code == 400 and "temperature" in bad.json()["error"]["message"]
    bad = httpx.post(served.url + "/api/chat", json={"model": "shvayambhu", "messages": msgs, "options": {"top_p": 7}})
    assert bad.status_code == 400 and "options.top_p" in bad.json()["error"]


def test_models_and_unknown_model(served):
    ids = [m.id for m in oa(served).models.list()]
    assert ids[:3] == ["shvayambhu", "shvayambhu:mlx", "shvayambhu:blt"] and "shvayambhu:ollama/llama3.2" in ids
    with pytest.raises(openai.NotFoundError) as e:
        oa(served).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert "shvayambhu:ollama/<model>" in str(e.value)


def test_ollama_model_name_selects_that_ollama_model(served, fake_ollama):
    fake_ollama.add_model("qwen2.5:0.5b")
    resp = oa(served).chat.completions.create(
        model="shvayambhu:ollama/qwen2.5:0.5b", messages=[{"role": "user", "content": QUESTION}]
    )
    assert resp.model_extra["shvayambhu"]["model"] == "qwen2.5:0.5b"
    assert fake_ollama.bodies("/api/chat")[-1]["model"] == "qwen2.5:0.5b"


def test_openai_embeddings_are_the_store_model(served):
    emb = oa(served).embeddings.create(model="shvayambhu", input=["water cycle", "black holes"])  # base64 on wire
    want = served.assistant.embedder.embed(["water cycle", "black holes"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == served.assistant.embedder.dim
    assert emb.data[1].embedding == pytest.approx(want[1].tolist(), abs=1e-6)
    r = httpx.post(served.url + "/v1/embeddings", json={"input": "x", "encoding_format": "float"})
    assert len(r.json()["data"][0]["embedding"]) == served.assistant.embedder.dim


def test_ollama_client_chat_generate_tags_show(served, fake_ollama):
    client = ollama.Client(host=served.url)
    names = [m.model for m in client.list().models]
    assert "shvayambhu" in names and "shvayambhu:blt" in names
    assert client.show("shvayambhu").capabilities == ["completion"]
    whole = client.chat(model="shvayambhu", messages=[{"role": "user", "content": QUESTION}])
    assert whole.done and whole.message.content and whole.done_reason == "stop"
    parts = list(
        client.chat(model="shvayambhu:latest", messages=[{"role": "user", "content": "What is rust?"}], stream=True)
    )
    assert len(parts) > 3 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts)  # the client drops the `shvayambhu` object: see below
    gen = client.generate(model="shvayambhu", prompt="Why is the sky blue?", stream=False)
    assert gen.response and gen.done
    streamed = "".join(
        p.response for p in client.generate(model="shvayambhu", prompt="Why is the sky blue?", stream=True)
    )
    assert streamed  # a second exchange: memory of the first changes the prompt, so not compared
    vec = client.embed(model="shvayambhu", input="water cycle").embeddings[0]
    assert vec == pytest.approx(served.assistant.embedder.embed(["water cycle"])[0].tolist(), abs=1e-6)
    assert client.ps() is not None and httpx.get(served.url + "/api/version").json()["version"]
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404


def test_ollama_ndjson_last_line_carries_the_evidence(served):
    body = {"model": "shvayambhu", "messages": [{"role": "user", "content": QUESTION}]}
    with httpx.stream("POST", served.url + "/api/chat", json=body, timeout=30) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert [x["done"] for x in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["shvayambhu"]["sources"] and "shvayambhu" not in lines[0]
    once = httpx.post(served.url + "/api/generate", json={**body, "prompt": QUESTION, "stream": False}, timeout=30)
    assert once.json()["response"] and once.json()["shvayambhu"]["workspace"]["winners"]
    load = httpx.post(served.url + "/api/chat", json={"model": "shvayambhu", "messages": []}).json()
    assert load["done_reason"] == "load"


def test_langchain_chat_models(served):
    lc_openai = pytest.importorskip("langchain_openai")
    lc_ollama = pytest.importorskip("langchain_ollama")
    llm = lc_openai.ChatOpenAI(model="shvayambhu", base_url=served.url + "/v1", api_key="unused", max_retries=0)
    assert llm.invoke("What is photosynthesis?").content
    assert "".join(c.content for c in llm.stream("What is a black hole?"))
    chat = lc_ollama.ChatOllama(model="shvayambhu", base_url=served.url)
    assert chat.invoke("What is the water cycle?").content


def test_search_matches_the_python_api(served):
    r = httpx.post(served.url + "/v1/search", json={"query": "immune system", "k": 3})
    assert r.status_code == 200
    want = [h.to_dict() for h in served.assistant.search("immune system", 3)]
    assert [h["id"] for h in r.json()] == [h["id"] for h in want] and len(want) == 3
    bad = httpx.post(served.url + "/v1/search", json={"query": "x", "k": 0})
    assert bad.status_code == 400 and "k" in bad.json()["error"]["message"]
    science = httpx.post(served.url + "/v1/search", json={"query": "immune", "k": 3, "where": {"category": "science"}})
    assert science.status_code == 200 and {h["metadata"]["category"] for h in science.json()} == {"science"}
    op = httpx.post(served.url + "/v1/search", json={"query": "x", "where": {"$or": "y"}})
    assert op.status_code == 400 and "where" in op.json()["error"]["message"]
    mode = httpx.post(served.url + "/v1/search", json={"query": "x", "mode": "sparkly"})
    assert mode.status_code == 400


GOOD = {"prompt": "What colour is the Zorblax nebula?", "response": "The Zorblax nebula glows a deep teal."}
BAD = {"prompt": "Describe the Quintar moon.", "response": "{response}"}


def test_ingest_jsonl_body_and_multipart(served):
    body = "\n".join(json.dumps(r) for r in (GOOD, BAD)) + "\n"
    r = httpx.post(
        served.url + "/v1/ingest?name=notes.jsonl",
        content=body.encode(),
        headers={"Content-Type": "application/jsonl"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["added"] == 1 and d["rejected"] == 1
    assert d["rejections"][0]["file"] == "notes.jsonl" and d["rejections"][0]["line"] == 2
    hits = httpx.post(served.url + "/v1/search", json={"query": "Zorblax nebula colour", "k": 1}).json()
    assert hits[0]["prompt"] == GOOD["prompt"]
    files = {"file": ("../../etc/evil name.jsonl", body.encode(), "application/octet-stream")}
    multipart = {"X-Shvayambhu-Session": "default"}  # a header no cross-site form can send (see test_serve_guard)
    again = httpx.post(served.url + "/v1/ingest", files=files, headers=multipart, timeout=60).json()
    assert again["unchanged"] == 1 and again["rejections"][0]["file"] == "evil_name.jsonl"
    wrong = httpx.post(served.url + "/v1/ingest", files={"file": ("x.exe", b"MZ")}, headers=multipart)
    assert wrong.status_code == 400 and ".jsonl" in wrong.json()["error"]["message"]
    edited = {**GOOD, "response": GOOD["response"] + " (edited)"}
    upload = {"file": ("notes.jsonl", (json.dumps(edited) + "\n").encode(), "application/octet-stream")}
    replaced = httpx.post(served.url + "/v1/ingest", files=upload, headers=multipart, timeout=60).json()
    assert replaced["updated"] == 1 and replaced["added"] == 0  # the same upload name is the same source
    hits = httpx.post(served.url + "/v1/search", json={"query": "Zorblax nebula colour", "k": 2}).json()
    assert hits[0]["response"].endswith("(edited)") and hits[1]["prompt"] != GOOD["prompt"]


def test_memories_list_and_forget(served):
    client = oa(served)
    for q in ("What is a comet?", "What is an asteroid?"):
        client.chat.completions.create(model="shvayambhu", messages=[{"role": "user", "content": q}], user="mem")
    mems = httpx.get(served.url + "/v1/sessions/mem/memories").json()["memories"]
    assert len(mems) == 2 and "asteroid" in mems[0]["text"]  # newest first
    assert httpx.delete(f"{served.url}/v1/sessions/mem/memories/{mems[0]['id']}").json()["deleted"] == 1
    left = httpx.get(served.url + "/v1/sessions/mem/memories").json()["memories"]
    assert [m["id"] for m in left] == [mems[1]["id"]]
    assert httpx.delete(served.url + "/v1/sessions/mem/memories").json()["deleted"] == 1
    assert "mem" not in httpx.get(served.url + "/v1/sessions").json()["sessions"]


def test_status_and_health(served):
    s = httpx.get(served.url + "/v1/status", timeout=60).json()
    assert s["backends"]["ollama"]["ready"] and s["server"]["queue_depth"] == 16
    assert any(c["name"] == "corpus" for c in s["collections"])
    assert httpx.get(served.url + "/healthz").json() == {"status": "ok", "warm": False}  # no warm-up in a thread
