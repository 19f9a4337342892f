"""Sessions: one collection per session name and no other (old stores still read), one name rule for the
header, `user` and the URL, no shared memory by default, and API keys that each see only their own sessions."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import quote

import httpx
import openai
import pytest

from index.errors import UsageError
from rag.consciousness.memory import MemoryStream
from rag.consciousness.session_names import SessionNameError, collection_name, legacy_name, sessions
from rag.serve import ServeOptions, start_in_thread
from rag.serve.options import options_from

QUESTION = "How do vaccines train the immune system?"


def as_old_store(a, session: str) -> None:
    """Move `session`'s collection to the name stores written before gave it."""
    col = a.client.get_collection(collection_name(session), embedding_function=None)
    col.modify(name=legacy_name(session))
    a._memories.clear()


def test_a_session_named_like_anothers_hash_reads_nothing_of_it(make_assistant) -> None:
    a = make_assistant()
    victim, old_plain = "notes/private ä", "plain.name"
    a.memory(victim).add("My bank PIN is 4711.", kind="note")
    a.memory(old_plain).add("I like tea.", kind="note")
    as_old_store(a, victim)
    as_old_store(a, old_plain)
    squatter = "h" + hashlib.sha1(victim.encode()).hexdigest()[:20]
    assert legacy_name(squatter) == legacy_name(victim)  # the old mapping gave both one collection
    assert collection_name(squatter) != collection_name(victim)

    assert [m.text for m in a.memory(victim).list()] == ["My bank PIN is 4711."]  # old stores stay readable
    assert [m.text for m in a.memory(old_plain).list()] == ["I like tea."]
    assert a.memory(squatter).list() == [] and a.memory(squatter).recall("bank PIN", min_relevance=0.0) == []
    a.memory(squatter).add("Squatter's own note.", kind="note")
    assert [m.text for m in a.memory(victim).list()] == ["My bank PIN is 4711."]
    assert [m.text for m in a.memory(squatter).list()] == ["Squatter's own note."]
    assert {victim, old_plain, squatter} <= set(sessions(a.client))
    # A fresh stream (another process) finds the old collection again, and clearing removes it.
    fresh = MemoryStream(a.client, victim, a.embedder)
    assert fresh.count() == 1 and fresh.clear() == 1 and legacy_name(victim) not in sessions(a.client)
    assert a.memory(squatter).count() == 1
    # A collection that holds another session under this session's new name is never written into.
    a.client.get_collection(collection_name(squatter), embedding_function=None).modify(name=collection_name("x"))
    a._memories.clear()
    assert a.memory("x").list() == []
    with pytest.raises(SessionNameError, match="belongs to session"):
        a.memory("x").add("mine?", kind="note")


def chat(url: str, session: str | None = None, key: str = "unused", **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if session is not None:
        headers["X-Shvayambhu-Session"] = session
    payload = {"model": "shvayambhu", "messages": [{"role": "user", "content": QUESTION}], **body}
    return httpx.post(url + "/v1/chat/completions", json=payload, headers=headers, timeout=60)


def test_one_name_rule_for_header_user_and_url(served) -> None:
    for name, by_header in (("my notes (v2)", True), ("Grüße & co", False)):
        r = chat(served.url, name) if by_header else chat(served.url, user=name)
        assert r.status_code == 200
        got = httpx.get(served.url + "/v1/sessions/" + quote(name, safe="") + "/memories").json()
        assert got["session"] == name and len(got["memories"]) == 1  # what the header made, the URL reaches
    for bad in ("a/b", "a\\b", "x" * 129):
        r = chat(served.url, bad)
        assert r.status_code == 400 and "without / or" in r.json()["error"]["message"], bad
        assert chat(served.url, user=bad).status_code == 400
    assert httpx.get(served.url + "/v1/sessions/a%5Cb/memories").status_code == 400


def test_delete_with_an_empty_id_list_deletes_nothing(served) -> None:
    for _ in range(2):
        assert chat(served.url, "keep").status_code == 200
    url = served.url + "/v1/sessions/keep/memories"
    for query in ("?ids=", "?ids=,", "?ids=%20"):
        assert httpx.delete(url + query).json()["deleted"] == 0
    assert len(httpx.get(url).json()["memories"]) == 2
    assert httpx.delete(url).json()["deleted"] == 2  # without `ids`: the whole session, as before


def test_no_session_named_means_no_memory(served, fake_ollama) -> None:
    before = served.assistant.sessions()
    for _ in range(2):
        assert chat(served.url).status_code == 200
    ev = chat(served.url).json()["shvayambhu"]
    assert ev["session"] is None and ev["memories"] == []
    assert served.assistant.sessions() == before  # nothing written to a shared "default"
    assert all("<memory>" not in b["messages"][-1]["content"] for b in fake_ollama.bodies("/api/chat"))


def test_api_keys_keep_each_users_sessions_apart(make_assistant, fake_ollama) -> None:
    from rag.config import load_settings

    settings = load_settings(environ={"SHVAYAMBHU_SERVE_API_KEYS": "alice=key-a; bob=key-b"})
    assert options_from(settings.serve).key_prefixes == {"key-a": "alice", "key-b": "bob"}
    opts = ServeOptions(api_key="admin", api_keys=["alice=key-a", "bob=key-b"])
    with start_in_thread(make_assistant(), opts) as served:
        url = served.url
        assert chat(url, "notes", key="key-a").status_code == 200
        alice = httpx.get(url + "/v1/sessions/notes/memories", headers={"Authorization": "Bearer key-a"}).json()
        assert alice["session"] == "notes" and len(alice["memories"]) == 1
        bob = {"Authorization": "Bearer key-b"}
        assert httpx.get(url + "/v1/sessions/notes/memories", headers=bob).json()["memories"] == []
        assert "notes" not in httpx.get(url + "/v1/sessions", headers=bob).json()["sessions"]
        assert httpx.get(url + "/v1/sessions", headers={"Authorization": "Bearer key-a"}).json()["sessions"] == [
            "notes"
        ]
        fake_ollama.reset()
        client = openai.OpenAI(base_url=url + "/v1", api_key="key-b", max_retries=0)
        msgs = [{"role": "user", "content": QUESTION}]
        client.chat.completions.create(model="shvayambhu", messages=msgs, user="notes")
        assert "<memory>" not in fake_ollama.bodies("/api/chat")[-1]["messages"][-1]["content"]  # not alice's
        assert httpx.delete(url + "/v1/sessions/notes/memories", headers=bob).json()["deleted"] == 1  # bob's own
        admin = httpx.get(url + "/v1/sessions", headers={"Authorization": "Bearer admin"}).json()["sessions"]
        assert "alice/notes" in admin  # the --api-key holder sees every session
        assert httpx.get(url + "/v1/sessions", headers={"Authorization": "Bearer nope"}).status_code == 401
    with pytest.raises(UsageError, match=r"api_keys\[0\]"):
        ServeOptions(api_keys=["no key here"])
    with pytest.raises(UsageError, match="twice"):
        ServeOptions(api_keys=["a=k", "b=k"])


def test_cli_ask_remembers_only_with_a_session(run_cli, make_assistant) -> None:
    before = make_assistant().sessions()
    code, out, err = run_cli("ask", QUESTION, "--backend", "ollama")
    assert code == 0 and "session" not in err
    assert make_assistant().sessions() == before
    code, out, err = run_cli("ask", QUESTION, "--backend", "ollama", "--session", "cli-s", "--json")
    assert code == 0 and json.loads(out)["session"] == "cli-s" and "session: cli-s" in err
    assert make_assistant().memory("cli-s").count() == 1


def test_cli_chat_starts_a_new_session_per_conversation(run_cli) -> None:
    code, out, _ = run_cli("chat", "--backend", "ollama", stdin="Remember that my cat is called Miso.\n/exit\n")
    assert code == 0
    first = out.split("session '", 1)[1].split("'", 1)[0]
    code, out, _ = run_cli("chat", "--backend", "ollama", stdin="/memory\n/exit\n")
    second = out.split("session '", 1)[1].split("'", 1)[0]
    assert first.startswith("chat-") and second != first and "(no memories yet)" in out
    code, out, _ = run_cli("chat", "--session", first, stdin="/memory\n/exit\n")
    assert "Miso" in out  # going on with a named conversation
