"""One answer through the server: model names, the request's conversation, the model queue, the report.

Generation runs in worker threads one piece at a time, so a cancelled request (a client that went away)
stops pulling the AnswerStream after the current piece, closes it and frees the model's place in the queue.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rag.consciousness.session_names import KEY_SEPARATOR, SessionNameError, check_session
from rag.serve.errors import ApiError
from rag.serve.limits import too_large
from rag.serve.queue import ModelQueue, Place

MODEL = "shvayambhu"
NAMED_BACKENDS = ("mlx", "blt")
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


def split_messages(messages: list[Any]) -> tuple[str, list[dict[str, str]]]:
    """(the question, the earlier turns) from a validated request's messages (the last is the user's)."""
    turns = [{"role": m.role, "content": m.content} for m in messages]
    return turns[-1]["content"], turns[:-1]


def check_question(question: str, limit: int) -> str:
    """400 on an empty question, 413 on one over the limit."""
    if not question.strip():
        raise ApiError(400, "the question is empty", param="messages")
    size = len(question.encode("utf-8"))
    if size > limit:
        raise too_large("the question", size, limit)
    return question


def session_of(header: str | None, user: Any, prefix: str | None = None) -> str | None:
    """The memory session a request names: the X-Shvayambhu-Session header, else OpenAI's `user`; None when it
    names none (it then reads and writes no memory: no client shares another's by default). Under an API key
    with a session prefix ([serve] api_keys) the session is `prefix/name`, which no other key can name."""
    s = header or (user if isinstance(user, str) else "")
    if not s:
        return None
    try:
        s = check_session(s)
    except SessionNameError as e:
        raise ApiError(400, str(e), param="user") from None
    return f"{prefix}{KEY_SEPARATOR}{s}" if prefix else s


def key_prefix(request: Any) -> str | None:
    """The session prefix of the API key the request came with (None: no key, or a key that sees every session)."""
    return getattr(request.state, "session_prefix", None)


def request_session(request: Any, user: Any = None) -> str | None:
    """`session_of` for a request: its header, `user`, and its key's prefix."""
    return session_of(request.headers.get("x-shvayambhu-session"), user, key_prefix(request))


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
    place: Place  # taken at admission; freed when the answer ends, fails, or is never pulled
    answer: Any = None
    started: bool = False

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text pieces; holds the model's lock while pulling them."""
        self.started = True
        async with self.engine.queue.hold(self.place):
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

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(collect, tg.cancel_scope)
                tg.start_soon(watch, tg.cancel_scope)
        finally:
            await self.close()
        if failed:
            raise failed[0]
        return result[0] if result else None

    async def close(self) -> None:
        """Free the place and the prepared answer of a job whose pieces were never pulled (a client gone first)."""
        if self.started or self.place.released:
            return
        self.place.release()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close, self.stream)


class ClosingStream(StreamingResponse):
    """A streamed response that closes its body however it ends (a client gone, an error), so the answer's
    generator chain is closed at once, the generation stops and the model's place in the queue is freed."""

    def __init__(self, content: Any, job: Job, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]
                await self.job.close()


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
        self.warm = False  # set once rag.serve.warmup has run (or given up)

    def _backend(self, target: Target) -> Any:
        with self._load_lock:  # loading a model twice at once wastes seconds and memory
            return self.assistant.backend(target.backend, target.model)

    async def start(
        self,
        target: Target,
        question: str,
        history: list[dict[str, str]],
        session: str | None,
        options: dict[str, Any] | None = None,
    ) -> Job:
        """Resolve the backend, take a place in its queue (503 when full), then retrieve and build the prompt.
        `options`: sampling options of this request only (the request models' `sampling()`); `session` None: no
        memory."""
        backend = await anyio.to_thread.run_sync(self._backend, target)
        place = self.queue.admit(f"{backend.name}/{backend.model}")
        if options:
            backend = WithOptions(backend, options)

        def begin() -> Any:
            return self.assistant.stream(
                question, backend=backend, session=session, history=history, use_memory=session is not None
            )

        try:
            stream = await anyio.to_thread.run_sync(begin)
        except BaseException:
            place.release()
            raise
        return Job(self, stream, place)


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
