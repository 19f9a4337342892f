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
    split_messages,
)
from rag.serve.schemas import ChatCompletionRequest, EmbeddingsRequest

router = APIRouter()
OWNER = "shvayambhu"
MAX_EMBED_INPUTS = 2048


def usage(question: str, history: list[dict[str, str]], text: str) -> dict[str, int]:
    """Token counts estimated without a tokenizer (the backends do not all report them)."""
    prompt = estimate_tokens(question) + sum(estimate_tokens(t["content"]) for t in history)
    completion = estimate_tokens(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(answer: Any) -> str:
    return "length" if answer.done_reason == "length" else "stop"


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, body: ChatCompletionRequest) -> Any:
    """A chat answer grounded in the corpus; the top-level `shvayambhu` object carries the evidence."""
    target = parse_model(body.model)
    question, history = split_messages(body.messages)
    check_question(question, request.app.state.options.max_question_bytes)
    session = request_session(request, body.user)
    job = await request.app.state.engine.start(target, question, history, session, body.sampling())
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = sse(job, cid, created, target.name, include_usage, question, history)
        headers = {"Cache-Control": "no-cache"}
        return ClosingStream(events, job, media_type="text/event-stream", headers=headers)
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


def check_texts(texts: list[str], limit: int) -> list[str]:
    """Texts to embed (validated strings): at most MAX_EMBED_INPUTS, each within `limit` bytes."""
    if len(texts) > MAX_EMBED_INPUTS:
        raise ApiError(413, f"input: at most {MAX_EMBED_INPUTS} texts a request, got {len(texts)}", param="input")
    for i, t in enumerate(texts):
        if len(t.encode("utf-8")) > limit:
            raise ApiError(413, f"input[{i}] is over the limit of {limit:,} bytes a text", param="input")
    return texts


@router.post("/v1/embeddings")
async def embeddings(request: Request, body: EmbeddingsRequest) -> dict[str, Any]:
    """Vectors from the store's embedding model; `encoding_format` float or base64 (little-endian float32)."""
    texts = check_texts(body.input, request.app.state.options.max_question_bytes)
    fmt = body.encoding_format or "float"
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
