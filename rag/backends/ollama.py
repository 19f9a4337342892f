"""The Ollama backend: chat through the official ``ollama`` client; failures become actionable messages."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import ollama
from pydantic import ValidationError

from rag.backends.base import BackendError, Chunk, Generation, GenerationOptions, PromptProfile

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
RETRYABLE = frozenset({"unreachable", "timeout", "dropped", "server"})
# Text that a model's tokenizer would read as a special token. Ollama renders the model's template with the
# messages and tokenizes the result with special tokens parsed, on /api/chat and raw /api/generate alike, so
# no request shape keeps content as text: the content itself must not spell one. Covered: `<|...|>` (ChatML,
# Llama 3, Phi, Granite, Command R), DeepSeek's `<｜...｜>`, Gemma's turn and image marks, `<s>`/`</s>` and
# the like, Llama 2's `<<SYS>>`, Mistral's `[INST]` family.
_SPECIAL = re.compile(
    r"<[|｜]|[|｜]>|<(?=/?(?:s|bos|eos|pad|unk|mask|start_of_turn|end_of_turn|start_of_image|end_of_image)>)"
    r"|<(?=</?SYS>>)|\[(?=/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|IMG)\])"
)
BREAK = "\u200b"  # a zero-width space after the first character: the same text to read, no token to match


def as_text(content: str) -> str:
    """`content` with every spelling of a special token broken by a zero-width space, so that Ollama's
    tokenizer reads it as text; special tokens then come only from the model's own chat template."""
    return _SPECIAL.sub(lambda m: m.group(0)[0] + BREAK + m.group(0)[1:], content)


class OllamaError(BackendError):
    """A BackendError with a machine-readable ``kind``.

    Kinds: unreachable, not_pulled, timeout, context, dropped, server, bad_request, bad_response.
    """

    def __init__(self, message: str, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        """True for failures that may pass on a retry (connection, timeout, dropped stream, 5xx)."""
        return self.kind in RETRYABLE


def resolve_host(host: str | None = None) -> str:
    """The Ollama base URL from `host`, else OLLAMA_HOST, else localhost; as the ollama client reads it.

    No scheme means http on port 11434; ``http://h`` without a port means port 80, ``https://h`` 443.
    """
    raw = (host or os.environ.get("OLLAMA_HOST") or "").strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest, port = "http", raw, DEFAULT_PORT
    else:
        port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT)
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    hostname = split.hostname or "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    path = split.path.strip("/")
    return f"{scheme}://{hostname}:{split.port or port}" + (f"/{path}" if path else "")


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: httpx builds a new one per client otherwise (~40-70 ms each)."""
    make = getattr(httpx, "create_ssl_context", None)
    return make() if make is not None else ssl.create_default_context()


def _client(host: str, timeout: float) -> ollama.Client:
    return ollama.Client(host=host, timeout=timeout, verify=_tls())


def canonical_model(name: str) -> str:
    """Ollama's name for a model with its default tag: ``llama3.2`` -> ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def list_models(host: str | None = None, *, timeout: float = 5.0) -> list[str]:
    """Names (``name:tag``) of the models pulled on the Ollama at `host`; OllamaError when it can't answer."""
    url = resolve_host(host)
    try:
        with _client(url, timeout) as client:
            listing = client.list()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one actionable message
        raise translate_error(exc, host=url, model="", timeout=timeout) from None
    return [m.model for m in listing.models if m.model]


def to_ollama_options(options: GenerationOptions | None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ollama ``options``: `base` overlaid with the fields set in `options` (max_tokens -> num_predict)."""
    out = dict(base or {})
    if options is None:
        return out
    for name in ("temperature", "top_p", "top_k", "repeat_penalty", "num_ctx", "seed"):
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    if options.stop:
        out["stop"] = list(options.stop)
    if options.max_tokens is not None:
        out["num_predict"] = options.max_tokens
    return out


def translate_error(
    exc: BaseException, *, host: str, model: str, timeout: float | None = None, num_ctx: int | None = None
) -> OllamaError:
    """The OllamaError (message and kind) for an exception raised while talking to Ollama."""
    if isinstance(exc, OllamaError):
        return exc
    if isinstance(exc, (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)):
        return OllamaError(
            f"Cannot reach Ollama at {host}. Start it with `ollama serve` or set --ollama-host/OLLAMA_HOST",
            "unreachable",
        )
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        secs = f"{timeout:g} s" if timeout is not None else "the configured timeout"
        return OllamaError(
            f"Ollama at {host} gave no answer from model '{model}' within {secs}. A cold model can take a "
            f"while to load; raise the timeout (timeout=..., --timeout) or retry once the model is loaded",
            "timeout",
        )
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return OllamaError(
            f"Ollama at {host} closed the connection in the middle of an answer from '{model}' ({exc}). "
            f"The server may have crashed or run out of memory: check its log and retry",
            "dropped",
        )
    if isinstance(exc, ollama.ResponseError):
        text = str(exc.error)
        status = exc.status_code if exc.status_code and exc.status_code > 0 else None
        low = text.lower()
        if "context length" in low or "context window" in low or "exceeds the context" in low:
            return _context_error(model, num_ctx, text)
        if status == 404 and "not found" in low:
            return OllamaError(f"Model '{model}' is not pulled on {host}: run `ollama pull {model}`", "not_pulled", 404)
        if status is None or status >= 500:
            where = f"HTTP {status}" if status else "error inside the stream"
            return OllamaError(f"Ollama at {host} failed on model '{model}' ({where}): {text}", "server", status)
        return OllamaError(
            f"Ollama at {host} rejected the request for '{model}' (HTTP {status}): {text}",
            "bad_request",
            status,
        )
    if isinstance(exc, ollama.RequestError):
        return OllamaError(f"Invalid request for Ollama model '{model}': {exc.error}", "bad_request")
    if isinstance(exc, (ValidationError, ValueError)):
        return OllamaError(
            f"Ollama at {host} sent an answer for '{model}' that could not be read: {exc}", "bad_response"
        )
    if isinstance(exc, httpx.HTTPError):
        return OllamaError(f"Talking to Ollama at {host} failed ({type(exc).__name__}: {exc}); retry", "server")
    return OllamaError(f"Ollama call to '{model}' at {host} failed: {type(exc).__name__}: {exc}", "server")


def _context_error(model: str, num_ctx: int | None, detail: str) -> OllamaError:
    ctx = f"num_ctx={num_ctx}" if num_ctx else "its context window"
    bigger = f" (e.g. num_ctx={num_ctx * 2})" if num_ctx else ""
    return OllamaError(
        f"The prompt does not fit {ctx} of model '{model}' ({detail}). Raise num_ctx{bigger} or lower the "
        f"prompt budget (fewer or shorter exemplars and memories)",
        "context",
    )


def _timings(resp: Any, wall_ms: float) -> dict[str, float]:
    ms = {
        "total_ms": "total_duration",
        "load_ms": "load_duration",
        "prompt_eval_ms": "prompt_eval_duration",
        "eval_ms": "eval_duration",
    }
    out: dict[str, float] = {"wall_ms": round(wall_ms, 3)}
    for key, attr in ms.items():
        value = getattr(resp, attr, None)
        if value is not None:
            out[key] = value / 1e6
    for key, attr in (("prompt_tokens", "prompt_eval_count"), ("eval_tokens", "eval_count")):
        value = getattr(resp, attr, None)
        if value is not None:
            out[key] = float(value)
    return out


def _entropy(entry: Any) -> float | None:
    """Entropy (nats) of the top-k alternatives, the unlisted mass as one more outcome: a lower bound."""
    alts = getattr(entry, "top_logprobs", None)
    if not alts:
        return None
    ps = [math.exp(a.logprob) for a in alts]
    rest = max(0.0, 1.0 - sum(ps))
    return -sum(p * math.log(p) for p in ps + [rest] if p > 0)


class _Collector:
    """Accumulates streamed parts (or one whole response) into a Generation."""

    def __init__(self, backend: OllamaBackend, num_ctx: int | None) -> None:
        self.backend = backend
        self.num_ctx = num_ctx
        self.parts: list[str] = []
        self.probs: list[float] = []
        self.entropies: list[float] = []
        self.started = time.perf_counter()

    def add(self, resp: Any) -> str:
        text = (resp.message.content if resp.message is not None else "") or ""
        self.parts.append(text)
        for entry in resp.logprobs or ():
            self.probs.append(math.exp(entry.logprob))
            h = _entropy(entry)
            if h is not None:
                self.entropies.append(h)
        return text

    def finish(self, resp: Any) -> Generation:
        pec = getattr(resp, "prompt_eval_count", None)
        if self.num_ctx and pec is not None and pec >= self.num_ctx:
            raise _context_error(
                self.backend.model,
                self.num_ctx,
                f"Ollama evaluated {pec} prompt tokens, the whole window, so it cut the prompt",
            )
        return Generation(
            text="".join(self.parts),
            model=self.backend.model,
            backend=self.backend.name,
            done_reason=resp.done_reason or "stop",
            probs=self.probs or None,
            entropies=self.entropies or None,
            timings=_timings(resp, (time.perf_counter() - self.started) * 1000),
        )


class OllamaBackend:
    """Generation through an Ollama server (local or remote) with the official client, sync and async.

    Its profile is the layer's full prompt budgeted as [workspace] says, asked with `defaults` (the
    [ollama] sampling options)."""

    name = "ollama"

    def __init__(
        self,
        host: str | None,
        model: str,
        *,
        timeout: float = 300.0,
        keep_alive: str | float | None = None,
        options: dict[str, Any] | None = None,
        logprobs: bool = True,
        top_logprobs: int = 0,
        defaults: GenerationOptions | None = None,
    ) -> None:
        self.profile = PromptProfile(options=defaults or GenerationOptions())
        self.host = resolve_host(host)
        self.model = model
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.options = dict(options or {})
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self._client: ollama.Client | None = None
        self._probe: ollama.Client | None = None  # short timeout, for available()
        self._aclient: ollama.AsyncClient | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None

    # -- plumbing ---------------------------------------------------------------------------------------
    def _sync(self) -> ollama.Client:
        if self._client is None:
            self._client = _client(self.host, self.timeout)
        return self._client

    def _async(self) -> ollama.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:  # an httpx pool belongs to one event loop
            self._aclient = ollama.AsyncClient(host=self.host, timeout=self.timeout, verify=_tls())
            self._aloop = loop
        return self._aclient

    def _request(
        self, messages: list[dict[str, str]], options: GenerationOptions | None, stream: bool
    ) -> dict[str, Any]:
        req: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": as_text(m["content"])} for m in messages],
            "options": to_ollama_options(options, self.options) or None,
            "stream": stream,
            "keep_alive": self.keep_alive,
        }
        if self.logprobs:
            req["logprobs"] = True
            if self.top_logprobs:
                req["top_logprobs"] = self.top_logprobs
        return req

    def _num_ctx(self, options: GenerationOptions | None) -> int | None:
        return (options.num_ctx if options and options.num_ctx else None) or self.options.get("num_ctx")

    def _unfinished(self) -> OllamaError:
        return OllamaError(
            f"Ollama at {self.host} ended the stream from '{self.model}' without its final message", "dropped"
        )

    def _error(self, exc: BaseException, options: GenerationOptions | None) -> OllamaError:
        return translate_error(
            exc, host=self.host, model=self.model, timeout=self.timeout, num_ctx=self._num_ctx(options)
        )

    # -- the Backend protocol ---------------------------------------------------------------------------
    def generate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Generation:
        """One whole answer."""
        col = _Collector(self, self._num_ctx(options))
        try:
            resp = self._sync().chat(**self._request(messages, options, stream=False))
            col.add(resp)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, options) from None
        return col.finish(resp)

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Iterator[Chunk]:
        """The answer piece by piece; the last chunk has ``done=True`` and the whole Generation."""
        col = _Collector(self, self._num_ctx(options))
        last: Chunk | None = None
        try:
            for resp in self._sync().chat(**self._request(messages, options, stream=True)):
                text = col.add(resp)
                if resp.done:
                    last = Chunk(text=text, done=True, generation=col.finish(resp))
                elif text:
                    yield Chunk(text=text)
        except OllamaError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, options) from None
        if last is None:
            raise self._unfinished()
        yield last  # after the response is read to its end, so that its connection goes back to the pool

    def available(self) -> bool:
        """True when the server answers /api/tags within 2 s and lists this model."""
        try:
            if self._probe is None:
                self._probe = _client(self.host, 2.0)
            names = {m.model for m in self._probe.list().models}
        except Exception:  # noqa: BLE001 - availability is a yes/no question
            return False
        return canonical_model(self.model) in names

    # -- async ------------------------------------------------------------------------------------------
    async def agenerate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Generation:
        """One whole answer, through ollama.AsyncClient."""
        col = _Collector(self, self._num_ctx(options))
        try:
            resp = await self._async().chat(**self._request(messages, options, stream=False))
            col.add(resp)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, options) from None
        return col.finish(resp)

    async def astream(
        self, messages: list[dict[str, str]], options: GenerationOptions | None = None
    ) -> AsyncIterator[Chunk]:
        """The answer piece by piece, through ollama.AsyncClient."""
        col = _Collector(self, self._num_ctx(options))
        last: Chunk | None = None
        try:
            async for resp in await self._async().chat(**self._request(messages, options, stream=True)):
                text = col.add(resp)
                if resp.done:
                    last = Chunk(text=text, done=True, generation=col.finish(resp))
                elif text:
                    yield Chunk(text=text)
        except OllamaError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, options) from None
        if last is None:
            raise self._unfinished()
        yield last

    def close(self) -> None:
        """Close the synchronous connection pools."""
        for client in (self._client, self._probe):
            if client is not None:
                client.close()
        self._client = self._probe = None

    async def aclose(self) -> None:
        """Close the asynchronous connection pool (from the loop that used it)."""
        if self._aclient is not None and self._aloop is asyncio.get_running_loop():
            await self._aclient.close()
        self._aclient = None
        self._aloop = None
