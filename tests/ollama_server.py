"""A small Ollama-protocol server for tests and benchmarks, on loopback only.

It speaks the documented shapes of /api/chat, /api/generate (newline-delimited JSON streaming by default,
one object with ``"stream": false``), /api/tags, /api/show, /api/embed, /api/embeddings, /api/ps and
/api/version, with Ollama's error bodies (``{"error": "..."}``) and status codes. Every request is recorded,
requests in flight are counted, and each model can be given a behaviour: its reply, delays, failures,
dropped connections, a strict context window.

In a test::

    with OllamaServer({"llama3.2": ModelBehavior(delay=0.1)}) as server:
        client = ollama.Client(host=server.url)

Standalone, for benchmarks: ``python tests/ollama_server.py --port 11500 --models llama3.2 --delay 0.2``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "0.13.0"
Reply = Callable[[str, dict[str, Any]], str]

# Text is split into "tokens" as a word or a punctuation mark with its leading whitespace; joined, they
# give the text back exactly.
_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """Pseudo-tokens of `text` whose concatenation is `text`."""
    return _TOKEN.findall(text)


def canonical(name: str) -> str:
    """Ollama's model name with its default tag: ``llama3.2`` -> ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# ---------------------------------------------------------------------------------------------------------
# Replies


_OPENINGS = [
    "Here is how I would think about {k}.",
    "There are a few ways to look at {k}.",
    "A good place to start with {k} is its purpose.",
    "When people ask about {k}, the short answer is that it depends on context.",
    "Let me take {k} one piece at a time.",
]
_MIDDLES = [
    "The first thing to notice is what is being assumed, because assumptions shape every later step.",
    "It helps to separate what is known from what is guessed, and to say which is which.",
    "A concrete example usually makes the idea clearer than a definition does.",
    "Trade-offs matter here: what you gain in one place is often paid for somewhere else.",
    "Small, checkable steps tend to beat one large leap, since each step can be verified.",
    "History shows that ideas like this one change as people test them against evidence.",
    "The details vary, but the underlying pattern is stable enough to reason about.",
]
_CLOSINGS = [
    "If you tell me more about your situation, I can make this more specific.",
    "In short, {k} rewards patience and a willingness to revise your view.",
    "That is the core of it; the rest is practice and attention to detail.",
    "I am fairly confident about the outline, less so about the edge cases.",
]


def _keywords(prompt: str) -> str:
    words = {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", prompt)}
    words = sorted(words, key=lambda w: (-len(w), w))
    return " ".join(words[:2]) or "this question"


def default_reply(prompt: str, request: dict[str, Any]) -> str:
    """A plausible, varied answer that mentions the prompt's longest words.

    Deterministic for a given prompt and ``options.seed`` (or ``temperature`` 0); random otherwise, as a
    sampling model is.
    """
    opts = request.get("options") or {}
    seed = opts.get("seed")
    if seed is None and opts.get("temperature") == 0:
        seed = 0
    rng = random.Random(f"{seed}\x00{prompt}") if seed is not None else random.Random()
    k = _keywords(prompt)
    parts = [rng.choice(_OPENINGS)] + rng.sample(_MIDDLES, rng.randint(2, 3)) + [rng.choice(_CLOSINGS)]
    return " ".join(p.format(k=k) for p in parts)


def echo_reply(prompt: str, request: dict[str, Any]) -> str:
    """Answer with the prompt itself (what a broken generator produced before)."""
    return prompt


def placeholder_reply(prompt: str, request: dict[str, Any]) -> str:
    """Answer with a template placeholder instead of text."""
    return "{response}"


def canned(text: str) -> Reply:
    """A reply function that always answers `text`."""
    return lambda prompt, request: text


# ---------------------------------------------------------------------------------------------------------
# Behaviour and records


@dataclass
class ModelBehavior:
    """How one model answers. Delays are in seconds; counters apply to /api/chat and /api/generate."""

    reply: Reply | str | None = None  # None: default_reply; a str: that text
    delay: float = 0.0  # before the response headers (prompt processing / queueing)
    first_byte_delay: float = 0.0  # after the headers, before the first body byte
    token_delay: float = 0.0  # between streamed chunks
    fail_times: int = 0  # the next N generation requests answer `fail_status`
    fail_status: int = 500
    fail_message: str = "llama runner process has terminated: signal: killed"
    drop_times: int = 0  # the next N generation requests lose their connection mid-answer
    drop_after_chunks: int = 2  # streamed chunks sent before the drop (non-streaming: drop before any byte)
    context_length: int = 4096  # num_ctx when the request sets none
    strict_context: bool = False  # 400 on an over-long prompt instead of truncating it silently
    embedding_dim: int = 32
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    capabilities: list[str] = field(default_factory=lambda: ["completion"])


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    body: Any  # parsed JSON, or the raw text when it was not JSON, or None
    at: float


class _Stop(Exception):
    """The connection was dropped on purpose."""


# ---------------------------------------------------------------------------------------------------------
# The server


class OllamaServer:
    """An Ollama-protocol HTTP server on 127.0.0.1, run in a background thread; also a context manager."""

    def __init__(
        self,
        models: dict[str, ModelBehavior] | Iterable[str] = ("llama3.2",),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = VERSION,
    ) -> None:
        if isinstance(models, dict):
            items = list(models.items())
        else:
            items = [(m, ModelBehavior()) for m in models]
        self.models: dict[str, ModelBehavior] = {canonical(n): b for n, b in items}
        self.version = version
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.loaded: dict[str, float] = {}  # model -> time it was "loaded"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OllamaServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-ollama", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; pending delays end at once."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> OllamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers -----------------------------------------------------------------------------------
    def behavior(self, model: str) -> ModelBehavior:
        """The behaviour of `model` (which must exist), to change it in place."""
        return self.models[canonical(model)]

    def add_model(self, model: str, behavior: ModelBehavior | None = None) -> None:
        """'Pull' a model."""
        with self._lock:
            self.models[canonical(model)] = behavior or ModelBehavior()

    def remove_model(self, model: str) -> None:
        """'Delete' a model."""
        with self._lock:
            self.models.pop(canonical(model), None)

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies received on `path`, in order."""
        with self._lock:
            return [r.body for r in self.requests if r.path == path]

    def reset(self) -> None:
        """Forget recorded requests and the in-flight maximum."""
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    # -- internals used by the handler ------------------------------------------------------------------
    def _record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, body, time.time()))

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _take(self, model: str, counter: str) -> bool:
        """Consume one unit of a behaviour counter (fail_times/drop_times); True when one was left."""
        with self._lock:
            b = self.models.get(model)
            if b is None or getattr(b, counter) <= 0:
                return False
            setattr(b, counter, getattr(b, counter) - 1)
            return True

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _load(self, model: str) -> int:
        """load_duration in ns: a cold model costs a little, a warm one almost nothing."""
        with self._lock:
            cold = model not in self.loaded
            self.loaded[model] = time.time()
        return 1_500_000 if cold else 20_000


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: OllamaServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, dropped pools) are normal here; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_INT_OPTIONS = {
    "num_ctx",
    "num_predict",
    "seed",
    "top_k",
    "num_keep",
    "repeat_last_n",
    "num_batch",
    "num_gpu",
    "num_thread",
    "mirostat",
    "main_gpu",
}
_FLOAT_OPTIONS = {
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
}


def _check_options(options: Any) -> dict[str, Any]:
    """Ollama's option type checks (api.Options.FromMap), with its error texts."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise _HTTPError(400, "json: cannot unmarshal options into Go value of type map[string]interface {}")
    for key, val in options.items():
        if val is None:
            continue
        if key in _INT_OPTIONS and (isinstance(val, bool) or not isinstance(val, (int, float))):
            raise _HTTPError(400, f'option "{key}" must be of type integer')
        if key in _FLOAT_OPTIONS and (isinstance(val, bool) or not isinstance(val, (int, float))):
            raise _HTTPError(400, f'option "{key}" must be of type float32')
        if key == "stop" and not (isinstance(val, list) and all(isinstance(s, str) for s in val)):
            raise _HTTPError(400, 'option "stop" must be of an array of strings')
    return options


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    server_version = "fake-ollama"
    sys_version = ""
    _in_flight = False  # this request is counted in the owner's in_flight

    def setup(self) -> None:
        super().setup()
        # As Go's net/http (and so Ollama) does: without it, Nagle + delayed ACKs stall small writes ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -- plumbing ---------------------------------------------------------------------------------------
    @property
    def owner(self) -> OllamaServer:
        return self.server.owner

    def _read_body(self) -> tuple[Any, str | None]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None, None
        text = raw.decode("utf-8", "replace")
        try:
            return json.loads(text), None
        except json.JSONDecodeError as e:
            return text, f"invalid character at offset {e.pos}: {e.msg}"

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._settle()
        self.wfile.write(data)

    def _settle(self) -> None:
        """Stop counting this request as in flight, once, before its last bytes go out: a client that has read
        the whole answer may send its next request before this thread runs another line."""
        if self._in_flight:
            self._in_flight = False
            self.owner._leave()

    def _send_text(self, status: int, text: str, head: bool = False) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _drop(self) -> None:
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True
        raise _Stop

    # -- routing ----------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self.owner._record("HEAD", self.path, None)
        if self.path == "/":
            self._send_text(200, "Ollama is running", head=True)
        else:
            self._send_text(404, "404 page not found", head=True)

    def do_GET(self) -> None:  # noqa: N802
        self.owner._record("GET", self.path, None)
        routes = {"/": self._root, "/api/tags": self._tags, "/api/version": self._version, "/api/ps": self._ps}
        route = routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._send_text(404, "404 page not found")
        else:
            route()

    def do_POST(self) -> None:  # noqa: N802
        body, bad_json = self._read_body()
        path = self.path.split("?", 1)[0]
        self.owner._record("POST", path, body)
        routes = {
            "/api/chat": self._chat,
            "/api/generate": self._generate,
            "/api/show": self._show,
            "/api/embed": self._embed,
            "/api/embeddings": self._embeddings,
        }
        route = routes.get(path)
        if route is None:
            self._send_text(404, "404 page not found")
            return
        try:
            if bad_json:
                raise _HTTPError(400, bad_json)
            if body is None:
                raise _HTTPError(400, "missing request body")
            if not isinstance(body, dict):
                raise _HTTPError(400, "json: cannot unmarshal into Go value of type api.Request")
            route(body)
        except _HTTPError as e:
            self._error(e.status, e.message)
        except _Stop:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- simple endpoints -------------------------------------------------------------------------------
    def _root(self) -> None:
        self._send_text(200, "Ollama is running")

    def _version(self) -> None:
        self._send_json(200, {"version": self.owner.version})

    def _details(self, b: ModelBehavior) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": b.family,
            "families": [b.family],
            "parameter_size": b.parameter_size,
            "quantization_level": b.quantization_level,
        }

    def _digest(self, name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest()

    def _tags(self) -> None:
        with self.owner._lock:
            models = list(self.owner.models.items())
        self._send_json(
            200,
            {
                "models": [
                    {
                        "name": n,
                        "model": n,
                        "modified_at": "2025-01-01T00:00:00Z",
                        "size": 2_019_393_189,
                        "digest": self._digest(n),
                        "details": self._details(b),
                    }
                    for n, b in models
                ]
            },
        )

    def _ps(self) -> None:
        with self.owner._lock:
            loaded = [(n, self.owner.models[n]) for n in self.owner.loaded if n in self.owner.models]
        self._send_json(
            200,
            {
                "models": [
                    {
                        "name": n,
                        "model": n,
                        "size": 3_000_000_000,
                        "digest": self._digest(n),
                        "details": self._details(b),
                        "expires_at": "2099-01-01T00:00:00Z",
                        "size_vram": 3_000_000_000,
                        "context_length": b.context_length,
                    }
                    for n, b in loaded
                ]
            },
        )

    def _model(self, body: dict[str, Any]) -> tuple[str, ModelBehavior]:
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            raise _HTTPError(400, "model is required")
        model = canonical(name)
        with self.owner._lock:
            behavior = self.owner.models.get(model)
        if behavior is None:
            raise _HTTPError(404, f'model "{name}" not found, try pulling it first')
        return model, behavior

    def _show(self, body: dict[str, Any]) -> None:
        model, b = self._model(body)
        arch = b.family
        self._send_json(
            200,
            {
                "license": "",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model}\n',
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": self._details(b),
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": 3_212_749_888,
                    f"{arch}.context_length": 131072,
                    f"{arch}.embedding_length": b.embedding_dim,
                },
                "capabilities": list(b.capabilities),
                "modified_at": "2025-01-01T00:00:00Z",
            },
        )

    def _vector(self, text: str, dim: int) -> list[float]:
        digest = b""
        counter = 0
        while len(digest) < 4 * dim:
            digest += hashlib.sha256(f"{counter}\x00{text}".encode()).digest()
            counter += 1
        raw = [int.from_bytes(digest[4 * i : 4 * i + 4], "little") / 2**31 - 1.0 for i in range(dim)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        return [x / norm for x in raw]

    def _embed(self, body: dict[str, Any]) -> None:
        started = time.perf_counter_ns()
        model, b = self._model(body)
        _check_options(body.get("options"))
        inp = body.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and all(isinstance(t, str) for t in inp):
            texts = inp
        elif inp is None:
            texts = []
        else:
            raise _HTTPError(400, "invalid input type")
        ctx = (body.get("options") or {}).get("num_ctx") or b.context_length
        if body.get("truncate") is False and any(len(tokenize(t)) > ctx for t in texts):
            raise _HTTPError(400, "the input length exceeds the context length")
        dim = body.get("dimensions") or b.embedding_dim
        load = self.owner._load(model)
        self._send_json(
            200,
            {
                "model": model,
                "embeddings": [self._vector(t, dim) for t in texts],
                "total_duration": time.perf_counter_ns() - started + load,
                "load_duration": load,
                "prompt_eval_count": sum(min(len(tokenize(t)), ctx) for t in texts),
            },
        )

    def _embeddings(self, body: dict[str, Any]) -> None:
        model, b = self._model(body)
        prompt = body.get("prompt") or ""
        self._send_json(200, {"embedding": self._vector(prompt, b.embedding_dim) if prompt else []})

    # -- generation -------------------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if messages is None:
            messages = []
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
        ):
            raise _HTTPError(400, "json: cannot unmarshal messages into Go struct field ChatRequest.messages")
        prompt = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        # Each message costs its tokens plus a few for the chat template's role markers.
        prompt_tokens = sum(4 + len(tokenize(m.get("content") or "")) for m in messages) + 1
        if not messages:
            prompt_tokens = 0
        self._complete(body, chat=True, prompt=prompt, prompt_tokens=prompt_tokens, empty=not messages)

    def _generate(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt") or ""
        if not isinstance(prompt, str):
            raise _HTTPError(400, "json: cannot unmarshal prompt into Go struct field GenerateRequest.prompt")
        system = body.get("system") or ""
        prompt_tokens = len(tokenize(system)) + len(tokenize(prompt)) + 4
        self._complete(body, chat=False, prompt=prompt, prompt_tokens=prompt_tokens, empty=not prompt)

    def _complete(self, body: dict[str, Any], *, chat: bool, prompt: str, prompt_tokens: int, empty: bool) -> None:
        started = time.perf_counter_ns()
        owner = self.owner
        model, b = self._model(body)
        options = _check_options(body.get("options"))
        stream = body.get("stream") is not False
        owner._enter()
        self._in_flight = True
        try:
            load = owner._load(model)
            if empty:  # an empty prompt only loads the model
                self._send_json(200, self._final(model, chat, "load", started, load, 0, 0, None))
                return
            owner._sleep(b.delay)
            if owner._take(model, "fail_times"):
                raise _HTTPError(b.fail_status, b.fail_message)
            dropping = owner._take(model, "drop_times")
            num_ctx = int(options.get("num_ctx") or b.context_length)
            if prompt_tokens > num_ctx:
                if b.strict_context:
                    raise _HTTPError(400, "the input length exceeds the context length")
                prompt_tokens = num_ctx  # Ollama truncates the prompt silently to fit
            text, reason = self._answer(b, prompt, body, options)
            tokens = tokenize(text)
            want_lp = body.get("logprobs") is True
            top_n = int(body.get("top_logprobs") or 0)
            if stream:
                self._stream(
                    body, model, chat, tokens, reason, b, started, load, prompt_tokens, dropping, want_lp, top_n
                )
            else:
                if dropping:
                    self._drop()
                obj = self._final(model, chat, reason, started, load, prompt_tokens, len(tokens), text)
                if want_lp:
                    obj["logprobs"] = [_logprob(t, top_n) for t in tokens]
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if b.first_byte_delay:
                    self.wfile.flush()
                    owner._sleep(b.first_byte_delay)
                self._settle()
                self.wfile.write(data)
        finally:
            self._settle()

    def _answer(self, b: ModelBehavior, prompt: str, body: dict[str, Any], options: dict[str, Any]) -> tuple[str, str]:
        if b.reply is None:
            text = default_reply(prompt, body)
        elif isinstance(b.reply, str):
            text = b.reply
        else:
            text = b.reply(prompt, body)
        reason = "stop"
        stops = [s for s in options.get("stop") or [] if s]
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        limit = options.get("num_predict")
        if isinstance(limit, (int, float)) and limit >= 0:
            tokens = tokenize(text)
            if len(tokens) > limit:
                text, reason = "".join(tokens[: int(limit)]), "length"
        return text, reason

    def _final(
        self,
        model: str,
        chat: bool,
        reason: str,
        started: int,
        load: int,
        prompt_tokens: int,
        eval_count: int,
        text: str | None,
    ) -> dict[str, Any]:
        total = time.perf_counter_ns() - started + load
        prompt_ns = prompt_tokens * 25_000
        obj: dict[str, Any] = {"model": model, "created_at": _now()}
        if chat:
            obj["message"] = {"role": "assistant", "content": text or ""}
        else:
            obj["response"] = text or ""
        obj.update({"done": True, "done_reason": reason})
        if not chat and reason != "load":
            obj["context"] = list(range(1, prompt_tokens + eval_count + 1))[:64]
        obj.update({"total_duration": total, "load_duration": load})
        if reason != "load":
            eval_ns = max(total - load - prompt_ns, eval_count * 1000)
            obj.update(
                {
                    "prompt_eval_count": prompt_tokens,
                    "prompt_eval_duration": prompt_ns,
                    "eval_count": eval_count,
                    "eval_duration": eval_ns,
                }
            )
        return obj

    def _chunk_line(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(
        self,
        body: dict[str, Any],
        model: str,
        chat: bool,
        tokens: list[str],
        reason: str,
        b: ModelBehavior,
        started: int,
        load: int,
        prompt_tokens: int,
        dropping: bool,
        want_lp: bool,
        top_n: int,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.owner._sleep(b.first_byte_delay)
        for i, tok in enumerate(tokens):
            if dropping and i >= b.drop_after_chunks:
                self._drop()
            obj: dict[str, Any] = {"model": model, "created_at": _now()}
            if chat:
                obj["message"] = {"role": "assistant", "content": tok}
            else:
                obj["response"] = tok
            obj["done"] = False
            if want_lp:
                obj["logprobs"] = [_logprob(tok, top_n)]
            self._chunk_line(obj)
            if i + 1 < len(tokens):
                self.owner._sleep(b.token_delay)
        if dropping:
            self._drop()
        final = json.dumps(self._final(model, chat, reason, started, load, prompt_tokens, len(tokens), None))
        data = final.encode() + b"\n"
        self._settle()
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))  # last line and end of body together
        self.wfile.flush()


def _logprob(token: str, top_n: int) -> dict[str, Any]:
    """A deterministic log probability for `token`, with `top_n` alternatives (the token first) when asked."""
    h = int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "little")
    lp = -((h % 2000) / 1000.0)  # in [-2, 0]
    entry: dict[str, Any] = {"token": token, "logprob": lp, "bytes": list(token.encode())}
    if top_n > 0:
        rest = max(1e-9, 1.0 - math.exp(lp))
        alts = [{"token": token, "logprob": lp, "bytes": list(token.encode())}]
        for j in range(1, top_n):
            alt = f"{token.strip() or token}#{j}"
            alts.append({"token": alt, "logprob": math.log(rest / (2**j)), "bytes": list(alt.encode())})
        entry["top_logprobs"] = alts
    return entry


def main(argv: list[str] | None = None) -> None:
    """Run the server in the foreground until interrupted."""
    ap = argparse.ArgumentParser(description="A fake Ollama server on 127.0.0.1 for tests and benchmarks.")
    ap.add_argument("--port", type=int, default=11434)
    ap.add_argument("--models", default="llama3.2", help="comma-separated model names")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer starts")
    ap.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed chunks")
    ap.add_argument("--reply", default=None, help="a fixed answer text (default: a varied generated answer)")
    args = ap.parse_args(argv)
    behaviors = {
        m.strip(): ModelBehavior(reply=args.reply, delay=args.delay, token_delay=args.token_delay)
        for m in args.models.split(",")
        if m.strip()
    }
    server = OllamaServer(behaviors, port=args.port)
    print(f"fake ollama listening on {server.url}", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
