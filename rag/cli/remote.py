"""`ask`, `search` and `chat` through a running `shvayambhu serve` for the same data folder (a warm model).

`connect(settings)` reads `<data dir>/serve.json` (rag.serve.discovery): when its pid lives, its port answers
/healthz and its settings digest equals ours, it returns a `Remote` with the methods the commands call on a
`Shvayambhu` (`ask`, `stream`, `search`, `backend`, `chat`, `self_model`), speaking the server's native routes
(/v1/ask, /v1/search, /v1/backend). A stale file is removed; a server with other settings, or one that wants
an API key we do not have ($SHVAYAMBHU_API_KEY), is left alone with a one-line note and the command answers
in-process. Nothing heavy is imported here: a question through the server costs generation time only.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import quote

import typer

from index.errors import ShvayambhuError, UsageError
from rag.backends.base import BackendError
from rag.config import Settings
from rag.consciousness.selfmodel import SelfModel
from rag.serve import discovery

NoServerOpt = Annotated[
    bool,
    typer.Option("--no-server", help="Answer in this process even when `shvayambhu serve` runs for this data folder."),
]
HEALTH_TIMEOUT = 2.0  # seconds for /healthz: a live server answers it at once, even while it generates
KEY_ENV = "SHVAYAMBHU_API_KEY"


class Record:
    """A JSON object from the server with its fields as attributes; `to_dict` gives the object back."""

    def __init__(self, data: dict[str, Any], **extra: Any) -> None:
        self.__dict__.update(data)
        self.__dict__.update(extra)
        self._data = data

    def to_dict(self, show_prompt: bool = False) -> dict[str, Any]:
        return self._data


def answer_of(data: dict[str, Any]) -> Record:
    """An `Answer`-like record of `Answer.to_dict()`: sources as records, warnings always a list."""
    return Record(
        data,
        sources=[Record(s, quote=s.get("quote")) for s in data.get("sources", [])],  # quote: extractive only
        warnings=list(data.get("warnings", [])),
        details=Record(data["confidence_details"]) if data.get("confidence_details") else None,
    )


def connect(settings: Settings, no_server: bool = False) -> Remote | None:
    """The running server for `settings`' data folder, when there is one that answers as this process would."""
    if no_server:
        return None
    data_dir = settings.data_dir
    info = discovery.read(data_dir)
    if info is None:
        return None
    remote = Remote(info, settings)
    alive = discovery.pid_alive(info["pid"]) and remote.healthy()
    if alive is False:
        discovery.remove(data_dir, info["pid"])  # stale: the server died without removing it
        return None
    if alive is None:
        return None  # it lives but did not answer in time: busy starting or stopping; leave it be
    if info.get("settings") != discovery.settings_digest(settings):
        _note(remote, "runs with other settings (config file, flags or SHVAYAMBHU_* variables)")
        return None
    if info.get("auth") and not remote.key:
        _note(remote, f"wants an API key: set {KEY_ENV}")
        return None
    return remote


def _note(remote: Remote, why: str) -> None:
    typer.echo(f"note: the server on port {remote.port} {why}; answering in this process", err=True)


class Remote:
    """A running server, used as the commands use a `Shvayambhu`."""

    def __init__(self, info: dict[str, Any], settings: Settings) -> None:
        self.host, self.port, self.pid = info["host"], info["port"], info["pid"]
        self.settings = settings
        self.key = os.environ.get(KEY_ENV) or None

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def healthy(self) -> bool | None:
        """True when /healthz answers ok; False when nothing listens (stale); None when it does not answer."""
        conn = self._connection(HEALTH_TIMEOUT)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            return resp.status == 200 and json.loads(resp.read() or b"{}").get("status") == "ok"
        except ConnectionRefusedError:
            return False
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def _post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        """The open response to a JSON POST; an error status is raised as the error it stands for."""
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        conn = self._connection(timeout or self.settings.ollama.timeout)
        try:
            conn.request("POST", path, body=json.dumps(body).encode("utf-8"), headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ShvayambhuError(
                f"the server on port {self.port} stopped answering ({e}): run the command again, or add --no-server"
            ) from None
        if resp.status != 200:
            try:
                err = json.loads(resp.read() or b"{}").get("error") or {}
            except ValueError:
                err = {}
            conn.close()
            raise _error(err if isinstance(err, dict) else {"message": str(err)}, resp.status)
        return resp

    def _get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        conn = self._connection(self.settings.ollama.timeout)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        if resp.status != 200:
            raise _error(data.get("error") or {}, resp.status)
        return data

    # -- what the commands call ------------------------------------------------------------------------
    def stream(
        self,
        question: str,
        *,
        model: str | None = None,
        k: int | None = None,
        session: str | None = None,
        use_retrieval: bool = True,
        use_memory: bool = True,
        history: list[dict[str, str]] | None = None,
        show_prompt: bool = False,
        backend: Any = None,
    ) -> RemoteStream:
        """The answer's pieces as the server generates them; `.answer` once they end."""
        if backend is not None and not isinstance(backend, str):
            backend, model = backend.name, backend.model
        body = {
            "question": question,
            "backend": backend or self.settings.backend,
            "model": model,
            "k": k,
            "session": session or self.settings.session,
            "use_retrieval": use_retrieval,
            "use_memory": use_memory,
            "history": history or [],
            "show_prompt": show_prompt,
        }
        return RemoteStream(self._post("/v1/ask", {k: v for k, v in body.items() if v is not None}))

    def ask(self, question: str, **options: Any) -> Record:
        """The whole answer (as `Shvayambhu.ask`)."""
        s = self.stream(question, **options)
        for _ in s:
            pass
        return s.answer

    def search(self, query: str, k: int | None = None, **options: Any) -> list[Record]:
        """Hits as `Shvayambhu.search` finds them (`where`, `mmr`, `min_score`, `mode`)."""
        body = {"query": query, "k": k or self.settings.retrieval.k, **options}
        resp = self._post("/v1/search", {n: v for n, v in body.items() if v is not None})
        try:
            return [Record(h) for h in json.loads(resp.read())]
        finally:
            resp.close()

    def backend(self, name: str | None = None, model: str | None = None) -> Record:
        """The backend that answers (loaded on the server): `.name`, `.model`."""
        resp = self._post("/v1/backend", {"backend": name or self.settings.backend, "model": model})
        try:
            return Record(json.loads(resp.read()))
        finally:
            resp.close()

    def self_model(self) -> SelfModel:
        return SelfModel.from_settings(self.settings.self_model)

    def chat(self, session: str | None = None, **options: Any) -> RemoteChat:
        return RemoteChat(self, session or self.settings.session, options)

    def memories(self, session: str, limit: int) -> list[Any]:
        """The newest memories of `session`, newest first (as `MemoryStream.list`)."""
        from rag.consciousness.memory import Memory  # lazy: imports chromadb; only /memory needs it

        data = self._get(f"/v1/sessions/{quote(session, safe='')}/memories?limit={limit}")
        names = Memory.__dataclass_fields__
        return [Memory(**{k: v for k, v in m.items() if k in names}) for m in reversed(data["memories"])]


class RemoteStream:
    """Iterates an NDJSON answer from /v1/ask: text pieces, then `.answer`; `on_done(answer)` is called."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.answer: Record | None = None
        self.on_done: Callable[[Record], None] | None = None
        self.prep = None  # the prompt is shown in-process only (`--show-prompt` does not use the server)

    def __iter__(self) -> Iterator[str]:
        try:
            for raw in self.resp:
                line = json.loads(raw)
                if "piece" in line:
                    yield line["piece"]
                elif "answer" in line:
                    self.answer = answer_of(line["answer"])
                elif "error" in line:
                    raise _error(line["error"], line["error"].get("status", 500))
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise ShvayambhuError(f"the server's answer broke off ({e}): run the command again") from None
        finally:
            self.resp.close()
        if self.answer is None:
            raise ShvayambhuError("the server's answer ended without its sources: run the command again")
        if self.on_done is not None:
            self.on_done(self.answer)


class RemoteChat:
    """A conversation through the server (as `ChatSession`): turns kept here, memories on the server."""

    def __init__(self, remote: Remote, session: str, options: dict[str, Any]) -> None:
        self.remote, self.session, self.options = remote, session, options
        self.history: list[dict[str, str]] = []
        self.last: Record | None = None

    def send(self, text: str) -> RemoteStream:
        def done(answer: Record) -> None:
            self.last = answer
            self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer.answer}]

        s = self.remote.stream(text, session=self.session, history=list(self.history), **self.options)
        s.on_done = done
        return s

    def reset(self) -> None:
        self.history.clear()
        self.last = None

    def memories(self, limit: int = 10) -> list[Any]:
        return self.remote.memories(self.session, limit)


def _error(err: dict[str, Any], status: int) -> Exception:
    """The server's error as the error the in-process command would raise (same message, same exit code)."""
    message = str(err.get("message") or f"the server answered HTTP {status}")
    code = err.get("code")
    if status == 401:
        return ShvayambhuError(f"the server refused the API key: set {KEY_ENV} to its key, or add --no-server")
    if code == "backend_unavailable":
        return BackendError(message)
    if code in ("UsageError", "ConfigError"):
        return UsageError(message)
    return ShvayambhuError(message)
