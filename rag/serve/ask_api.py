"""Shvayambhu's native answer route, for the CLI (`ask`, `chat`) when a server for its data folder runs.

POST /v1/ask takes what `Shvayambhu.stream` takes and answers in newline-delimited JSON: `{"piece": str}` per
text piece, then `{"answer": {...}}`, the same dictionary `ask --json` prints in-process (`Answer.to_dict`); an
error after the first line arrives as `{"error": {"message", "code", "status"}}`. POST /v1/backend loads a
backend and names it (what `chat` shows before the first question).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
from fastapi import APIRouter, Request

from rag.serve.errors import ApiError, from_exception
from rag.serve.generation import ClosingStream, Job, check_question, session_of
from rag.serve.openai_api import json_body

router = APIRouter()
BACKEND_NAMES = ("auto", "ollama", "mlx", "blt")
MAX_HISTORY = 64


def _backend_args(body: dict[str, Any]) -> tuple[str | None, str | None]:
    backend, model = body.get("backend"), body.get("model")
    if backend is not None and backend not in BACKEND_NAMES:
        raise ApiError(400, f"backend: one of {', '.join(BACKEND_NAMES)}, not {backend!r}", param="backend")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ApiError(400, "model: a non-empty string", param="model")
    return backend, model


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name}: true or false", param=name)
    return value


def _history(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    ok = isinstance(value, list) and len(value) <= MAX_HISTORY
    ok = ok and all(
        isinstance(t, dict) and t.get("role") in ("user", "assistant") and isinstance(t.get("content"), str)
        for t in value
    )
    if not ok:
        raise ApiError(
            400, f'history: up to {MAX_HISTORY} {{"role": "user"|"assistant", "content": str}}', param="history"
        )
    return [{"role": t["role"], "content": t["content"]} for t in value]


@router.post("/v1/backend")
async def backend(request: Request) -> dict[str, str]:
    """`{"backend", "model"}` -> the backend that would answer, loaded: `{"name", "model"}`."""
    backend_name, model = _backend_args(await json_body(request))
    assistant = request.app.state.engine.assistant
    be = await anyio.to_thread.run_sync(lambda: assistant.backend(backend_name, model))
    return {"name": be.name, "model": be.model}


@router.post("/v1/ask")
async def ask(request: Request) -> Any:
    """`{"question", "backend", "model", "k", "session", "use_memory", "use_retrieval", "show_prompt",
    "history"}` -> NDJSON pieces, then the answer as `ask --json` prints it."""
    body = await json_body(request)
    engine = request.app.state.engine
    assistant = engine.assistant
    opts = request.app.state.options
    question = body.get("question")
    if not isinstance(question, str):
        raise ApiError(400, "question: give a string", param="question")
    check_question(question, opts.max_question_bytes)
    session = session_of(body.get("session"), None, assistant.settings.session)
    backend_name, model = _backend_args(body)
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= opts.max_k):
        raise ApiError(400, f"k: an integer from 1 to {opts.max_k}", param="k")
    use_memory, use_retrieval = _flag(body, "use_memory", True), _flag(body, "use_retrieval", True)
    show_prompt = _flag(body, "show_prompt", False)
    history = _history(body.get("history"))
    be = await anyio.to_thread.run_sync(lambda: assistant.backend(backend_name, model))
    key = f"{be.name}/{be.model}"
    engine.queue.check(key)

    def begin() -> Any:
        return assistant.stream(
            question,
            backend=be,
            k=k,
            session=session,
            use_retrieval=use_retrieval,
            use_memory=use_memory,
            history=history,
            show_prompt=show_prompt,
        )

    job = Job(engine, await anyio.to_thread.run_sync(begin), key)
    return ClosingStream(_lines(job, show_prompt), media_type="application/x-ndjson")


def _line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str) + "\n"


async def _lines(job: Job, show_prompt: bool) -> AsyncIterator[str]:
    try:
        async with aclosing(job.pieces()) as pieces:  # closed with this generator: the model is freed at once
            async for piece in pieces:
                yield _line({"piece": piece})
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as e:  # headers are sent: the error travels as the last line
        err = from_exception(e)
        yield _line({"error": {"message": err.message, "code": err.code, "status": err.status_code}})
        return
    yield _line({"answer": job.answer.to_dict(show_prompt=show_prompt)})
