"""OllamaBackend against a real Ollama, opt-in: the contract the fake server (tests/ollama_server.py) stands in for.

Run with `SHVAYAMBHU_TEST_OLLAMA=HOST` (e.g. `127.0.0.1:11434`) and at least one chat model pulled there;
`SHVAYAMBHU_TEST_OLLAMA_MODEL` picks the model [the first pulled one that is not an embedding model].
Everything is skipped when SHVAYAMBHU_TEST_OLLAMA is unset: CI and development machines have no Ollama.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from rag.backends.base import GenerationOptions
from rag.backends.ollama import OllamaBackend, OllamaError, canonical_model, list_models, resolve_host

HOST = os.environ.get("SHVAYAMBHU_TEST_OLLAMA", "").strip()
pytestmark = pytest.mark.skipif(
    not HOST, reason="set SHVAYAMBHU_TEST_OLLAMA=host[:port] to test OllamaBackend against a real Ollama"
)

MSGS = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What colour is a clear daytime sky?"},
]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def model() -> str:
    """The chat model to talk to: SHVAYAMBHU_TEST_OLLAMA_MODEL, else the first pulled non-embedding model."""
    names = list_models(HOST, timeout=10.0)
    chosen = os.environ.get("SHVAYAMBHU_TEST_OLLAMA_MODEL", "").strip()
    if chosen:
        assert canonical_model(chosen) in names, f"{chosen} is not pulled on {resolve_host(HOST)}: {names}"
        return chosen
    chat = [n for n in names if "embed" not in n.lower()]
    if not chat:
        pytest.skip(f"no chat model pulled on {resolve_host(HOST)}: `ollama pull qwen2.5:0.5b` (or any) first")
    return chat[0]


def options() -> GenerationOptions:
    return GenerationOptions(temperature=0.0, seed=7, max_tokens=MAX_TOKENS)


def test_lists_the_pulled_models_and_says_which_are_available(model: str) -> None:
    names = list_models(HOST, timeout=10.0)
    assert names and all(":" in n for n in names)  # name:tag, as canonical_model writes them
    assert OllamaBackend(HOST, model).available()
    assert not OllamaBackend(HOST, "shvayambhu-no-such-model:0b").available()


def test_chat_not_streamed(model: str) -> None:
    backend = OllamaBackend(HOST, model, keep_alive="5m")
    try:
        gen = backend.generate(MSGS, options())
    finally:
        backend.close()
    assert gen.text.strip() and gen.backend == "ollama" and gen.model == model
    assert gen.done_reason in ("stop", "length")
    assert {"total_ms", "prompt_tokens", "eval_tokens", "wall_ms"} <= set(gen.timings)
    assert 1 <= gen.timings["eval_tokens"] <= MAX_TOKENS  # num_predict reached Ollama
    if gen.probs is not None:  # Ollama versions with logprobs: one per token (the end token may have none)
        assert abs(len(gen.probs) - gen.timings["eval_tokens"]) <= 1 and all(0.0 < p <= 1.0 for p in gen.probs)


def test_chat_streamed(model: str) -> None:
    backend = OllamaBackend(HOST, model)
    try:
        chunks = list(backend.stream(MSGS, options()))
    finally:
        backend.close()
    *pieces, last = chunks
    assert pieces and all(c.text and not c.done for c in pieces)  # token by token before the final message
    assert last.done and last.generation is not None
    assert "".join(c.text for c in chunks) == last.generation.text and last.generation.text.strip()
    assert 1 <= last.generation.timings["eval_tokens"] <= MAX_TOKENS


def test_chat_async_streamed_and_not(model: str) -> None:
    async def run() -> tuple[str, str]:
        backend = OllamaBackend(HOST, model)
        try:
            whole = await backend.agenerate(MSGS, options())
            streamed = [c async for c in backend.astream(MSGS, options())]
        finally:
            await backend.aclose()
        assert streamed[-1].done and streamed[-1].generation is not None
        return whole.text, "".join(c.text for c in streamed)

    whole, streamed = asyncio.run(run())
    assert whole.strip() and streamed.strip()


def test_a_model_that_is_not_pulled_is_a_clear_error(model: str) -> None:
    backend = OllamaBackend(HOST, "shvayambhu-no-such-model:0b")
    with pytest.raises(OllamaError) as exc:
        backend.generate(MSGS, options())
    assert exc.value.kind == "not_pulled" and "ollama pull shvayambhu-no-such-model:0b" in str(exc.value)
    with pytest.raises(OllamaError) as exc:
        list(backend.stream(MSGS, options()))
    assert exc.value.kind == "not_pulled"
