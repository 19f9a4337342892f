"""Ollama-compatible routes: /api/chat, /api/generate (NDJSON streaming), /api/tags, /api/show, /api/version.

Enough of Ollama's documented shapes that its Python client, Open WebUI and LangChain's ChatOllama take
Shvayambhu for an Ollama model. The session comes from the X-Shvayambhu-Session header.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import Response

from rag.consciousness.workspace import estimate_tokens
from rag.serve.errors import from_exception
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
from rag.serve.openai_api import check_texts
from rag.serve.schemas import (
    OllamaChatRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaShowRequest,
)

router = APIRouter()
PROTOCOL_VERSION = "0.13.0"  # the Ollama API version whose shapes these routes follow
MODIFIED = "2026-12-01T00:00:00Z"


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "shvayambhu",
        "family": "shvayambhu",
        "families": ["shvayambhu"],
        "parameter_size": "",
        "quantization_level": "",
    }


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


async def answer_request(request: Request, body: OllamaChatRequest | OllamaGenerateRequest) -> Any:
    """What /api/chat and /api/generate share: queue, then stream NDJSON or answer once."""
    target = parse_model(body.model)
    chat = isinstance(body, OllamaChatRequest)
    if isinstance(body, OllamaChatRequest):
        if not body.messages:
            return final(target.name, chat, "load", "", time.perf_counter_ns())
        question, history = split_messages(body.messages)
    else:
        if not body.prompt:
            return final(target.name, chat, "load", "", time.perf_counter_ns())
        question, history = body.prompt, []
    check_question(question, request.app.state.options.max_question_bytes)
    session = request_session(request)
    started = time.perf_counter_ns()
    options = body.options.sampling() if body.options else {}
    job = await request.app.state.engine.start(target, question, history, session, options)
    if body.stream is not False:
        lines = ndjson(job, target.name, chat, question, started)
        return ClosingStream(lines, job, media_type="application/x-ndjson")
    text = await job.text(request)
    if text is None:
        return Response(status_code=499)  # the client went away; nobody reads this
    out = final(target.name, chat, finish(job.answer), text, started, question)
    out["shvayambhu"] = report(job.answer, job.stream.prep.hits)
    return out


def finish(answer: Any) -> str:
    return "length" if answer.done_reason == "length" else "stop"


def final(model: str, chat: bool, reason: str, text: str, started: int, question: str = "") -> dict[str, Any]:
    """The last object of an answer (the only one when not streamed), with Ollama's counters."""
    obj: dict[str, Any] = {"model": model, "created_at": now()}
    if chat:
        obj["message"] = {"role": "assistant", "content": text}
    else:
        obj["response"] = text
    obj.update({"done": True, "done_reason": reason})
    total = time.perf_counter_ns() - started
    obj.update({"total_duration": total, "load_duration": 0})
    if reason != "load":
        obj.update(
            {
                "prompt_eval_count": estimate_tokens(question),
                "prompt_eval_duration": 0,
                "eval_count": estimate_tokens(text),
                "eval_duration": total,
            }
        )
    return obj


async def ndjson(job: Job, model: str, chat: bool, question: str, started: int) -> AsyncIterator[str]:
    """One JSON object a line: pieces with done false, then the final object with the `shvayambhu` report."""
    text = []
    try:
        async with aclosing(job.pieces()) as pieces:  # closed with this generator: the model is freed at once
            async for piece in pieces:
                text.append(piece)
                obj: dict[str, Any] = {"model": model, "created_at": now()}
                obj.update({"message": {"role": "assistant", "content": piece}} if chat else {"response": piece})
                obj["done"] = False
                yield json.dumps(obj, ensure_ascii=False) + "\n"
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as e:  # headers are sent: Ollama reports a late error as an {"error"} line
        yield json.dumps({"error": from_exception(e).message}) + "\n"
        return
    last = final(model, chat, finish(job.answer), "", started, question)
    last["eval_count"] = estimate_tokens("".join(text))
    last["shvayambhu"] = report(job.answer, job.stream.prep.hits)
    yield json.dumps(last, ensure_ascii=False) + "\n"


@router.post("/api/chat")
async def chat(request: Request, body: OllamaChatRequest) -> Any:
    return await answer_request(request, body)


@router.post("/api/generate")
async def generate(request: Request, body: OllamaGenerateRequest) -> Any:
    return await answer_request(request, body)


@router.post("/api/embed")
async def embed(request: Request, body: OllamaEmbedRequest) -> dict[str, Any]:
    """Vectors from the store's embedding model, in Ollama's shape (`input`: a string or a list of them)."""
    texts = check_texts(body.input, request.app.state.options.max_question_bytes)
    embedder = request.app.state.engine.assistant.embedder
    started = time.perf_counter_ns()
    vectors = await anyio.to_thread.run_sync(embedder.embed, texts)
    return {
        "model": parse_model(body.model).name,
        "embeddings": [[float(x) for x in v] for v in vectors],
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": 0,
        "prompt_eval_count": sum(estimate_tokens(t) for t in texts),
    }


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    names = model_names(request.app.state.engine.assistant.settings)
    return {
        "models": [
            {"name": n, "model": n, "modified_at": MODIFIED, "size": 0, "digest": digest(n), "details": details()}
            for n in names
        ]
    }


@router.post("/api/show")
async def show(request: Request, body: OllamaShowRequest) -> dict[str, Any]:
    target = parse_model(body.model or body.name)
    return {
        "license": "",
        "modelfile": f"# Shvayambhu: retrieval-grounded answers\nFROM {target.name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": details(),
        "model_info": {"general.architecture": "shvayambhu", "general.basename": target.name},
        "capabilities": ["completion"],
        "modified_at": MODIFIED,
    }


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": PROTOCOL_VERSION}


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """Models that are generating or queued now."""
    busy = request.app.state.engine.queue.snapshot()
    return {
        "models": [
            {
                "name": k,
                "model": k,
                "size": 0,
                "digest": digest(k),
                "details": details(),
                "expires_at": MODIFIED,
                "size_vram": 0,
            }
            for k in busy
        ]
    }
