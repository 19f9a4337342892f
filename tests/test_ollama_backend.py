"""OllamaBackend against the fake Ollama server, through the real ``ollama`` client."""

from __future__ import annotations

import asyncio
import math
import socket
import time

import pytest

from rag.backends.base import BackendError, GenerationOptions
from rag.backends.ollama import OllamaBackend, OllamaError, list_models, resolve_host, to_ollama_options

try:
    from tests.ollama_server import ModelBehavior, OllamaServer
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from ollama_server import ModelBehavior, OllamaServer

MSGS = [
    {"role": "system", "content": "You are Shvayambhu. Answer briefly."},
    {"role": "user", "content": "What is the water cycle?"},
    {"role": "assistant", "content": "Water moving between sea, air and land."},
    {"role": "user", "content": "And what drives it?"},
]


@pytest.fixture
def server():
    with OllamaServer({"llama3.2": ModelBehavior(), "qwen2.5:0.5b": ModelBehavior()}) as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(exc: pytest.ExceptionInfo[BaseException]) -> str:
    assert isinstance(exc.value, BackendError)
    # No chained traceback to show: raised `from None`, or outside any except block.
    assert exc.value.__cause__ is None and (exc.value.__context__ is None or exc.value.__suppress_context__)
    return str(exc.value)


def test_chat_prompt_arrives_as_sent(server: OllamaServer) -> None:
    backend = OllamaBackend(server.url, "llama3.2", keep_alive="10m")
    gen = backend.generate(MSGS, GenerationOptions())
    (body,) = server.bodies("/api/chat")
    assert body["model"] == "llama3.2" and body["messages"] == MSGS
    assert body["stream"] is False and body["keep_alive"] == "10m" and body["logprobs"] is True
    assert gen.text and gen.model == "llama3.2" and gen.backend == "ollama" and gen.done_reason == "stop"
    expected = {"total_ms", "load_ms", "prompt_eval_ms", "eval_ms", "prompt_tokens", "eval_tokens", "wall_ms"}
    assert expected <= set(gen.timings)


def test_streaming_yields_the_same_text(server: OllamaServer) -> None:
    backend = OllamaBackend(server.url, "llama3.2")
    opts = GenerationOptions(seed=11)
    whole = backend.generate(MSGS, opts)
    chunks = list(backend.stream(MSGS, opts))
    assert len(chunks) > 3 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == whole.text == chunks[-1].generation.text
    assert chunks[-1].generation.probs == whole.probs
    assert server.bodies("/api/chat")[-1]["stream"] is True


def test_options_reach_the_server(server: OllamaServer) -> None:
    base = {"num_ctx": 4096, "temperature": 0.1, "mirostat": 0}
    backend = OllamaBackend(server.url, "llama3.2", options=base)
    opts = GenerationOptions(
        temperature=0.7, top_p=0.9, top_k=40, repeat_penalty=1.1, num_ctx=8192, seed=5, stop=["\n\n"], max_tokens=6
    )
    gen = backend.generate(MSGS, opts)
    sent = server.bodies("/api/chat")[0]["options"]
    assert sent == {
        "num_ctx": 8192,
        "temperature": 0.7,
        "mirostat": 0,
        "top_p": 0.9,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "seed": 5,
        "stop": ["\n\n"],
        "num_predict": 6,
    }
    assert gen.done_reason == "length" and gen.timings["eval_tokens"] == 6
    assert to_ollama_options(GenerationOptions()) == {}


def test_token_probabilities(server: OllamaServer) -> None:
    gen = OllamaBackend(server.url, "llama3.2", top_logprobs=4).generate(MSGS, GenerationOptions(seed=1))
    assert gen.probs and len(gen.probs) == gen.timings["eval_tokens"]
    assert all(0 < p <= 1 for p in gen.probs)
    assert gen.entropies and len(gen.entropies) == len(gen.probs) and all(h >= 0 for h in gen.entropies)
    assert server.bodies("/api/chat")[0]["top_logprobs"] == 4
    off = OllamaBackend(server.url, "llama3.2", logprobs=False).generate(MSGS, GenerationOptions())
    assert off.probs is None and "logprobs" not in server.bodies("/api/chat")[1]


def test_async_generate_and_stream(server: OllamaServer) -> None:
    backend = OllamaBackend(server.url, "qwen2.5:0.5b")
    opts = GenerationOptions(seed=2)
    whole = backend.generate(MSGS, opts)

    async def run() -> tuple[str, str]:
        gen = await backend.agenerate(MSGS, opts)
        parts = [c.text async for c in backend.astream(MSGS, opts)]
        await backend.aclose()
        return gen.text, "".join(parts)

    assert asyncio.run(run()) == (whole.text, whole.text)
    assert asyncio.run(run()) == (whole.text, whole.text)  # a second event loop gets its own client


def test_unreachable_server() -> None:
    port = free_port()
    backend = OllamaBackend(f"127.0.0.1:{port}", "llama3.2")
    for call in (lambda: backend.generate(MSGS), lambda: list(backend.stream(MSGS))):
        with pytest.raises(OllamaError) as info:
            call()
        assert message(info) == (
            f"Cannot reach Ollama at http://127.0.0.1:{port}. "
            "Start it with `ollama serve` or set --ollama-host/OLLAMA_HOST"
        )
        assert info.value.kind == "unreachable" and info.value.retryable
    t = time.perf_counter()
    assert backend.available() is False and time.perf_counter() - t < 3
    with pytest.raises(OllamaError, match="Cannot reach Ollama"):
        list_models(f"127.0.0.1:{port}")


def test_model_not_pulled(server: OllamaServer) -> None:
    backend = OllamaBackend(server.url, "mistral")
    for call in (lambda: backend.generate(MSGS), lambda: list(backend.stream(MSGS))):
        with pytest.raises(OllamaError) as info:
            call()
        assert message(info) == f"Model 'mistral' is not pulled on {server.url}: run `ollama pull mistral`"
        assert info.value.kind == "not_pulled" and not info.value.retryable
    assert backend.available() is False
    assert OllamaBackend(server.url, "llama3.2").available() is True
    assert OllamaBackend(server.url, "qwen2.5:0.5b").available() is True


def test_timeout(server: OllamaServer) -> None:
    server.behavior("llama3.2").delay = 2.0
    backend = OllamaBackend(server.url, "llama3.2", timeout=0.3)
    t = time.perf_counter()
    with pytest.raises(OllamaError) as info:
        backend.generate(MSGS)
    assert time.perf_counter() - t < 1.5
    text = message(info)
    assert info.value.kind == "timeout" and "within 0.3 s" in text and "raise the timeout" in text
    server.behavior("llama3.2").delay, server.behavior("llama3.2").first_byte_delay = 0.0, 2.0
    with pytest.raises(OllamaError, match="within 0.3 s"):
        list(backend.stream(MSGS))


def test_context_overflow(server: OllamaServer) -> None:
    long = [{"role": "user", "content": " ".join(["token"] * 300)}]
    backend = OllamaBackend(server.url, "llama3.2")
    with pytest.raises(OllamaError) as info:  # Ollama truncated silently: seen through prompt_eval_count
        backend.generate(long, GenerationOptions(num_ctx=128))
    text = message(info)
    assert info.value.kind == "context" and "num_ctx=128" in text and "raise num_ctx" in text.lower()
    assert "prompt budget" in text
    with pytest.raises(OllamaError, match="num_ctx=128"):
        list(backend.stream(long, GenerationOptions(num_ctx=128)))
    server.behavior("llama3.2").strict_context = True  # Ollama refused with 400
    with pytest.raises(OllamaError) as info:
        backend.generate(long, GenerationOptions(num_ctx=128))
    assert info.value.kind == "context" and "exceeds the context length" in message(info)
    assert backend.generate(MSGS, GenerationOptions(num_ctx=128)).text  # a prompt that fits is fine


def test_server_error_and_dropped_stream(server: OllamaServer) -> None:
    server.behavior("llama3.2").fail_times = 1
    backend = OllamaBackend(server.url, "llama3.2")
    with pytest.raises(OllamaError) as info:
        backend.generate(MSGS)
    assert info.value.kind == "server" and info.value.retryable and "HTTP 500" in message(info)
    assert "llama runner process has terminated" in str(info.value)
    server.behavior("llama3.2").drop_times = 1
    with pytest.raises(OllamaError) as info:
        list(backend.stream(MSGS))
    assert info.value.kind == "dropped" and "closed the connection" in message(info)
    assert backend.generate(MSGS).text


def test_host_resolution_and_list_models(server: OllamaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    assert OllamaBackend(None, "llama3.2").host == server.url
    assert OllamaBackend(None, "llama3.2").generate(MSGS).text
    assert sorted(list_models()) == ["llama3.2:latest", "qwen2.5:0.5b"]
    monkeypatch.delenv("OLLAMA_HOST")
    assert resolve_host(None) == "http://127.0.0.1:11434"
    assert resolve_host("gpu-box") == "http://gpu-box:11434"
    assert resolve_host("https://ollama.example.com") == "https://ollama.example.com:443"


def test_probabilities_are_exp_of_logprobs(server: OllamaServer) -> None:
    import ollama

    gen = OllamaBackend(server.url, "llama3.2").generate(MSGS, GenerationOptions(seed=9))
    client = ollama.Client(host=server.url)
    raw = client.chat(model="llama3.2", messages=MSGS, options={"seed": 9}, logprobs=True)
    assert gen.probs == pytest.approx([math.exp(lp.logprob) for lp in raw.logprobs])
