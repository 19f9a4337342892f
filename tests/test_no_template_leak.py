"""The prompt's markup never reaches an answer, on any route: a backend that reproduces its prompt (the fake
Ollama echoing the user message, reference block and memories included) yields no `<reference`, `<memory`,
`</`, chat-template tokens or role labels through the Python API, the CLI, the OpenAI and the Ollama APIs,
streamed and not, with and without a session's memories."""

from __future__ import annotations

import re

import httpx
import ollama
import openai
import pytest

from rag.postprocess import clean
from rag.serve import ServeOptions, start_in_thread

try:
    from tests.ollama_server import echo_reply
except ImportError:  # tests/ is not a package when pytest runs with rootdir-relative imports
    from ollama_server import echo_reply

QUESTION = "How do vaccines train the immune system?"
SESSION = "leak"
# What a small model wrote through the OpenAI API: the memory block from its middle on.
MID_BLOCK = (
    "The user said: How do vaccines work?\nI answered: They train the immune system.</memory>\n<memory>\n"
    "(just now) The user said: hi\nI answered: hello\n</memory></reference>\n\n" + QUESTION
)
FORBIDDEN = ("<reference", "<memory", "<exemplar", "</", "<|im_start|>", "<|im_end|>", "The user said", "I answered")
ROLE_LABEL = re.compile(r"^\s*(?:user|assistant|system|human)\s*:", re.I | re.M)


def check(text: str, where: str) -> None:
    for bad in FORBIDDEN:
        assert bad not in text, f"{where}: {bad!r} leaked into {text!r}"
    assert not ROLE_LABEL.search(text), f"{where}: a role label leaked into {text!r}"


@pytest.fixture(params=["echo", "mid-block"])
def reply(request, fake_ollama):
    fake_ollama.behavior("llama3.2").reply = echo_reply if request.param == "echo" else MID_BLOCK
    return request.param


@pytest.fixture
def assistant(make_assistant, reply):
    a = make_assistant()
    a.memory(SESSION).add_exchange("How do vaccines work?", "They train the immune system to know a germ.")
    return a


def test_the_cleaner_stops_at_our_markup() -> None:
    assert clean('<reference>\n<exemplar n="1">\nQ: a\nA: b\n</exemplar>\n</reference>\n\nIt is 4.')[0] == "It is 4."
    assert clean("Paris is the capital. The user said: x </memory> more")[0] == "Paris is the capital."
    assert clean("Fine.\n<memory>\n(just now) The user said: x\n</memory>")[0] == "Fine."
    assert clean("Use <b>bold</b> here.")[0] == "Use <b>bold</b> here."  # other markup is the answer's own


def test_python_api_ask_and_stream(assistant, fake_ollama) -> None:
    for kwargs in ({"session": SESSION}, {"use_memory": False}):
        answer = assistant.ask(QUESTION, **kwargs)
        check(answer.answer, f"ask {kwargs}")
        check("".join(assistant.stream(QUESTION, **kwargs)), f"stream {kwargs}")
    prompt = fake_ollama.bodies("/api/chat")[0]["messages"][-1]["content"]
    assert "<reference>" in prompt and "<memory>" in prompt  # the echo really had markup to leak


def test_cli_ask(assistant, run_cli) -> None:
    for extra in (("--session", SESSION), (), ("--stream",)):
        code, out, err = run_cli("ask", QUESTION, "--backend", "ollama", *extra)
        assert code == 0, err
        answer = out.split("\nsources:")[0]
        check(answer, f"ask {extra}")


def test_openai_and_ollama_apis(assistant, fake_ollama) -> None:
    msgs = [{"role": "user", "content": QUESTION}]
    with start_in_thread(assistant, ServeOptions()) as served:
        client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
        for user in ({"user": SESSION}, {}):
            whole = client.chat.completions.create(model="shvayambhu", messages=msgs, **user)
            check(whole.choices[0].message.content, f"openai {user}")
            chunks = client.chat.completions.create(model="shvayambhu", messages=msgs, stream=True, **user)
            check("".join(c.choices[0].delta.content or "" for c in chunks if c.choices), f"openai stream {user}")
        for headers in ({"X-Shvayambhu-Session": SESSION}, {}):
            oc = ollama.Client(host=served.url, headers=headers)
            check(oc.chat(model="shvayambhu", messages=msgs).message.content, f"/api/chat {headers}")
            streamed = "".join(p.message.content for p in oc.chat(model="shvayambhu", messages=msgs, stream=True))
            check(streamed, f"/api/chat stream {headers}")
            check(oc.generate(model="shvayambhu", prompt=QUESTION).response, f"/api/generate {headers}")
            streamed = "".join(p.response for p in oc.generate(model="shvayambhu", prompt=QUESTION, stream=True))
            check(streamed, f"/api/generate stream {headers}")
        mems = httpx.get(served.url + f"/v1/sessions/{SESSION}/memories").json()["memories"]
        assert any(m["kind"] == "exchange" for m in mems)
    prompts = [b["messages"][-1]["content"] for b in fake_ollama.bodies("/api/chat")]
    assert sum("<memory>" in p for p in prompts) >= 4  # the routes with a session did recall memories
