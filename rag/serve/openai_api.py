"""OpenAI-compatible routes: /v1/chat/completions (SSE or one JSON), /v1/models, /v1/embeddings."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from rag.consciousness.workspace import estimate_tokens
from rag.serve.errors import ApiError, error_body, from_exception
from rag.serve.generation import (
    ClosingStream,
    Job,
    check_question,
    model_names,
    parse_model,
    report,
    request_session,
    sampling,
    split_messages,
)

router = APIRouter()
OWNER = "shvayambhu"
MAX_EMBED_INPUTS = 2048


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or 400 saying what is wrong with it."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def usage(question: str, history: list[dict[str, str]], text: str) -> dict[str, int]:
    """Token counts estimated without a tokenizer (the backends do not all report them)."""
    prompt = estimate_tokens(question) + sum(estimate_tokens(t["content"]) for t in history)
    completion = estimate_tokens(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(answer: Any) -> str:
    return "length" if answer.done_reason == "length" else "stop"


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    """A chat answer grounded in the corpus; the top-level `shvayambhu` object carries the evidence."""
    body = await json_body(request)
    target = parse_model(body.get("model"))
    question, history = split_messages(body.get("messages"))
    check_question(question, request.app.state.options.max_question_bytes)
    session = request_session(request, body.get("user"))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    names = ("temperature", "top_p", "seed", "stop")
    options = sampling({"max_tokens": limit, **{n: body.get(n) for n in names}}, "")
    job = await request.app.state.engine.start(target, question, history, session, options)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = sse(job, cid, created, target.name, include_usage, question, history)
        return ClosingStream(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text = await job.text(request)
    if text is None:
        return Response(status_code=499)  # the client went away; nobody reads this
    answer = job.answer
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": target.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason(answer),
                "logprobs": None,
            }
        ],
        "usage": usage(question, history, text),
        "shvayambhu": report(answer, job.stream.prep.hits),
    }


def event(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def sse(
    job: Job, cid: str, created: int, model: str, include_usage: bool, question: str, history: list[dict[str, str]]
) -> AsyncIterator[str]:
    """Server-sent events: a role delta, content deltas, the finish chunk, `data: [DONE]`."""

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}],
        }

    yield event(chunk({"role": "assistant", "content": ""}))
    text = []
    try:
        async with aclosing(job.pieces()) as pieces:  # closed with this generator: the model is freed at once
            async for piece in pieces:
                text.append(piece)
                yield event(chunk({"content": piece}))
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as e:  # headers are sent: the error travels as an event, as OpenAI does
        yield event(error_body("/v1/chat/completions", from_exception(e)))
        yield "data: [DONE]\n\n"
        return
    answer = job.answer
    evidence = report(answer, job.stream.prep.hits)
    last = chunk({}, finish_reason(answer))
    if include_usage:
        yield event(last)
        last = {**chunk({}), "choices": [], "usage": usage(question, history, "".join(text))}
    last["shvayambhu"] = evidence
    yield event(last)
    yield "data: [DONE]\n\n"


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    settings = request.app.state.engine.assistant.settings
    created = int(request.app.state.started)
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": OWNER} for n in model_names(settings)],
    }


def check_texts(inp: Any, limit: int) -> list[str]:
    """Texts to embed: a string or a non-empty list of strings, each within `limit` bytes."""
    texts = [inp] if isinstance(inp, str) else inp
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "input: give a string or a non-empty list of strings", param="input")
    if len(texts) > MAX_EMBED_INPUTS:
        raise ApiError(413, f"input: at most {MAX_EMBED_INPUTS} texts a request, got {len(texts)}", param="input")
    for i, t in enumerate(texts):
        if len(t.encode("utf-8")) > limit:
            raise ApiError(413, f"input[{i}] is over the limit of {limit:,} bytes a text", param="input")
    return texts


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    """Vectors from the store's embedding model; `encoding_format` float or base64 (little-endian float32)."""
    body = await json_body(request)
    texts = check_texts(body.get("input"), request.app.state.options.max_question_bytes)
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, "encoding_format: float or base64", param="encoding_format")
    embedder = request.app.state.engine.assistant.embedder
    vectors = await anyio.to_thread.run_sync(embedder.embed, texts)
    data = []
    for i, v in enumerate(np.asarray(vectors, dtype="<f4")):
        vec: Any = base64.b64encode(v.tobytes()).decode() if fmt == "base64" else [float(x) for x in v]
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(estimate_tokens(t) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": embedder.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
