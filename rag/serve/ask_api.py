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
from rag.serve.generation import ClosingStream, Job, check_question, key_prefix, session_of
from rag.serve.schemas import AskRequest, BackendRequest

router = APIRouter()


@router.post("/v1/backend")
async def backend(request: Request, body: BackendRequest) -> dict[str, str]:
    """`{"backend", "model"}` -> the backend that would answer, loaded: `{"name", "model"}`."""
    assistant = request.app.state.engine.assistant
    be = await anyio.to_thread.run_sync(lambda: assistant.backend(body.backend, body.model))
    return {"name": be.name, "model": be.model}


@router.post("/v1/ask")
async def ask(request: Request, body: AskRequest) -> Any:
    """`{"question", "backend", "model", "k", "session", "use_memory", "use_retrieval", "show_prompt",
    "history"}` -> NDJSON pieces, then the answer as `ask --json` prints it. No session: no memory."""
    engine = request.app.state.engine
    assistant = engine.assistant
    opts = request.app.state.options
    check_question(body.question, opts.max_question_bytes)
    if body.k is not None and body.k > opts.max_k:
        raise ApiError(400, f"k: an integer from 1 to {opts.max_k}", param="k")
    session = session_of(body.session, None, key_prefix(request))
    be = await anyio.to_thread.run_sync(lambda: assistant.backend(body.backend, body.model))
    place = engine.queue.admit(f"{be.name}/{be.model}")

    def begin() -> Any:
        return assistant.stream(
            body.question,
            backend=be,
            k=body.k,
            session=session,
            use_retrieval=body.use_retrieval,
            use_memory=body.use_memory and session is not None,
            history=[t.model_dump() for t in body.history],
            show_prompt=body.show_prompt,
        )

    try:
        stream = await anyio.to_thread.run_sync(begin)
    except BaseException:
        place.release()
        raise
    job = Job(engine, stream, place)
    return ClosingStream(_lines(job, body.show_prompt), job, media_type="application/x-ndjson")


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
