"""One answer through the server: model names, the request's conversation, the model queue, the report.

Generation runs in worker threads one piece at a time, so a cancelled request (a client that went away)
stops pulling the AnswerStream after the current piece, closes it and frees the model's place in the queue.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rag.serve.errors import ApiError
from rag.serve.limits import too_large
from rag.serve.queue import ModelQueue

MODEL = "shvayambhu"
NAMED_BACKENDS = ("mlx", "blt")
MAX_SESSION_CHARS = 128
_END = object()


@dataclass(frozen=True)
class Target:
    """What a request's model name selects: `backend`/`model` None mean the configured ones."""

    name: str
    backend: str | None = None
    model: str | None = None


def parse_model(name: str | None) -> Target:
    """`shvayambhu`, `shvayambhu:mlx`, `shvayambhu:blt`, `shvayambhu:ollama/<model>` (`:latest` = the first)."""
    n = (name or MODEL).strip()
    if n in (MODEL, f"{MODEL}:latest"):
        return Target(MODEL)
    tag = n[len(MODEL) + 1 :] if n.startswith(MODEL + ":") else ""
    if tag in NAMED_BACKENDS:
        return Target(n, tag)
    if tag.startswith("ollama/") and len(tag) > len("ollama/"):
        return Target(n, "ollama", tag[len("ollama/") :])
    raise ApiError(
        404,
        f'model "{n}" not found: use shvayambhu, shvayambhu:mlx, shvayambhu:blt or shvayambhu:ollama/<model>',
        code="model_not_found",
        param="model",
    )


def model_names(settings: Any) -> list[str]:
    """The names /v1/models and /api/tags list."""
    return [MODEL, f"{MODEL}:mlx", f"{MODEL}:blt", f"{MODEL}:ollama/{settings.ollama.model}"]


def text_of(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of parts (text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, p in enumerate(content):
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            elif isinstance(p, str):
                parts.append(p)
            else:
                raise ApiError(400, f"{where}[{i}]: only text parts are understood", param=where)
        return "\n".join(parts)
    raise ApiError(400, f"{where}: content must be a string or a list of text parts", param=where)


def split_messages(messages: Any) -> tuple[str, list[dict[str, str]]]:
    """(the question, the earlier turns) from a chat request's messages; the last must be the user's."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: give a non-empty list of {role, content}", param="messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}]: each message needs a string role", param=f"messages[{i}]")
        turns.append({"role": m["role"], "content": text_of(m.get("content"), f"messages[{i}].content")})
    if turns[-1]["role"] != "user":
        raise ApiError(400, "messages: the last message must be the user's question", param="messages")
    return turns[-1]["content"], turns[:-1]


def check_question(question: str, limit: int) -> str:
    """400 on an empty question, 413 on one over the limit."""
    if not question.strip():
        raise ApiError(400, "the question is empty", param="messages")
    size = len(question.encode("utf-8"))
    if size > limit:
        raise too_large("the question", size, limit)
    return question


def session_of(header: str | None, user: Any, default: str) -> str:
    """The memory stream: the X-Shvayambhu-Session header, else OpenAI's `user`, else the configured one."""
    s = header or (user if isinstance(user, str) else "") or default
    s = s.strip()
    if not s or len(s) > MAX_SESSION_CHARS or not s.isprintable():
        raise ApiError(400, f"session: 1-{MAX_SESSION_CHARS} printable characters, got {s[:40]!r}", param="user")
    return s


# name -> (type, low, high) of the sampling options a request may set (GenerationOptions' names).
SAMPLING = {
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "top_k": (int, 1, 1000),
    "repeat_penalty": (float, 0.0, 10.0),
    "seed": (int, 0, 2**32 - 1),
    "max_tokens": (int, 1, 32768),
    "num_ctx": (int, 1, 1 << 20),
}
MAX_STOPS = 8


def sampling(values: dict[str, Any], where: str) -> dict[str, Any]:
    """A request's sampling options as GenerationOptions fields, checked; 400 naming the field otherwise."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) for s in stops):
                raise ApiError(400, f"{where}stop: a string or up to {MAX_STOPS} strings", param=name)
            out["stop"] = [s for s in stops if s] or None
            continue
        kind, low, high = SAMPLING[name]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (kind is int and value != int(value)) or not low <= value <= high:
            raise ApiError(400, f"{where}{name}: a {kind.__name__} from {low} to {high}, not {value!r}", param=name)
        out[name] = kind(value)
    return out


class WithOptions:
    """A backend with one request's sampling options laid over those the pipeline chose for it."""

    def __init__(self, inner: Any, overrides: dict[str, Any]) -> None:
        self.inner = inner
        self.overrides = overrides

    def __getattr__(self, name: str) -> Any:  # name, model, generate (reflection keeps the settings'), ...
        return getattr(self.inner, name)

    def stream(self, messages: list[dict[str, str]], options: Any) -> Any:
        return self.inner.stream(messages, dataclasses.replace(options, **self.overrides))


@dataclass
class Job:
    """A prepared answer waiting for its model; iterate `pieces()`, then read `answer`."""

    engine: Engine
    stream: Any  # rag.pipeline.AnswerStream
    key: str
    answer: Any = None

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text pieces; holds the model's lock while pulling them."""
        async with self.engine.queue.hold(self.key):
            try:
                while True:
                    piece = await anyio.to_thread.run_sync(_pull, self.stream)
                    if piece is _END:
                        break
                    yield piece
                self.answer = self.stream.answer
            finally:
                if self.answer is None:  # cancelled or failed: stop the backend before the lock goes
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(_close, self.stream)

    async def text(self, request: Any = None) -> str | None:
        """The whole answer; None when `request`'s client went away first (the generation is then stopped)."""
        if request is None:
            return "".join([p async for p in self.pieces()])
        result: list[str] = []
        failed: list[Exception] = []

        async def collect(scope: anyio.CancelScope) -> None:
            try:
                result.append("".join([p async for p in self.pieces()]))
            except Exception as e:  # raised below as itself, not inside an ExceptionGroup
                failed.append(e)
            scope.cancel()

        async def watch(scope: anyio.CancelScope) -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, tg.cancel_scope)
            tg.start_soon(watch, tg.cancel_scope)
        if failed:
            raise failed[0]
        return result[0] if result else None


class ClosingStream(StreamingResponse):
    """A streamed response that closes its body however it ends (a client gone, an error), so the answer's
    generator chain is closed at once, the generation stops and the model's lock is freed."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]


def _pull(stream: Any) -> Any:
    try:
        return next(stream)
    except StopIteration:
        return _END


def _close(stream: Any) -> None:
    # AnswerStream has no close() yet (NOTES-serve.md asks for one); closing its generator closes the backend's.
    closer = stream.close
    closer()


class Engine:
    """The assistant, its model queue and the lock that keeps backend loading single-file."""

    def __init__(self, assistant: Any, queue: ModelQueue) -> None:
        self.assistant = assistant
        self.queue = queue
        self._load_lock = threading.Lock()

    def _backend(self, target: Target) -> Any:
        with self._load_lock:  # loading a model twice at once wastes seconds and memory
            return self.assistant.backend(target.backend, target.model)

    async def start(
        self,
        target: Target,
        question: str,
        history: list[dict[str, str]],
        session: str,
        options: dict[str, Any] | None = None,
    ) -> Job:
        """Resolve the backend, refuse when its queue is full, then retrieve and build the prompt.
        `options`: sampling options of this request only (see `sampling`)."""
        backend = await anyio.to_thread.run_sync(self._backend, target)
        key = f"{backend.name}/{backend.model}"
        self.queue.check(key)
        if options:
            backend = WithOptions(backend, options)

        def begin() -> Any:
            return self.assistant.stream(question, backend=backend, session=session, history=history)

        return Job(self, await anyio.to_thread.run_sync(begin), key)


def report(answer: Any, hits: list[Any]) -> dict[str, Any]:
    """The `shvayambhu` object every answer carries: sources, confidence, backend, the workspace contest."""
    by_id = {h.id: h for h in hits}
    sources = []
    for s in answer.sources:
        d = s.to_dict()
        hit = by_id.get(s.id)
        if hit is not None:
            d["response"] = hit.response
            for name in ("retriever", "retrievers", "scores"):  # present when hybrid retrieval says so
                value = getattr(hit, name, None) or hit.metadata.get(name)
                if value:
                    d[name] = value
        sources.append(d)
    ws = answer.workspace.to_dict() if answer.workspace is not None else None
    return {
        "sources": sources,
        "confidence": round(answer.confidence, 4),
        "low_confidence": answer.low_confidence,
        "grounded": answer.grounded,
        "backend": answer.backend,
        "model": answer.model,
        "session": answer.session,
        "done_reason": answer.done_reason,
        "workspace": ws or {"winners": [], "losers": []},
        "memories": [m.to_dict() for m in answer.memories],
        "timings": {k: round(v, 2) for k, v in answer.timings.items()},
        "warnings": list(answer.warnings),
    }
