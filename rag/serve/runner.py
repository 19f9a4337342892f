"""Starting the server: in the foreground for `shvayambhu serve`, or in a thread for tests and benchmarks."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import uvicorn

from index.errors import ShvayambhuError, UsageError
from rag.serve import discovery, warmup
from rag.serve.options import ServeOptions, check_bind, key_from_env


def build(settings: Any, options: ServeOptions) -> Any:
    """The app over a `Shvayambhu` made from `settings` (a rag.config.Settings, or None for the defaults)."""
    from rag import Shvayambhu
    from rag.serve.app import create_app

    return create_app(Shvayambhu(settings), options)


def run(
    settings: Any = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    *,
    options: ServeOptions | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted. Refuses a non-loopback `host` without a key (`api_key` or $SHVAYAMBHU_API_KEY)
    and a port in use (one line naming it). While it runs, `<data dir>/serve.json` tells the CLI where it is
    (rag.serve.discovery), and the configured backend loads in the background so the first answer is quick."""
    key = key_from_env(api_key)
    opts = replace(options or ServeOptions(), host=host, port=port, api_key=key)
    check_bind(host, key or opts.secured)
    sock = bind(host, port)
    app = build(settings, opts)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = _Announcing(config, app.state.engine, auth=key is not None or opts.secured)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        server.withdraw()


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port); a port in use is one line that suggests --port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host!r}: {e.strerror}; give an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a just-closed port is reusable
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ShvayambhuError(
                f"port {port} on {host} is in use (another server?): pick a free one with --port N"
            ) from None
        raise ShvayambhuError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class _Announcing(uvicorn.Server):
    """uvicorn's server that, once it listens, writes the discovery file and warms the backend."""

    def __init__(self, config: Any, engine: Any, auth: bool) -> None:
        super().__init__(config)
        self.engine = engine
        self.assistant = engine.assistant
        self.auth = auth
        self.announced = False
        self.warming: asyncio.Task | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started or not sockets:
            return
        port = sockets[0].getsockname()[1]
        discovery.write(self.assistant.settings, self.config.host, port, self.auth)
        self.announced = True
        self.warming = asyncio.get_running_loop().create_task(warmup.warm(self.engine))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn re-raises SIGINT/SIGTERM once it has shut down, so `run`'s own cleanup may never run
        self.withdraw()
        await super().shutdown(sockets=sockets)

    def withdraw(self) -> None:
        """Remove the discovery file (if it is still ours)."""
        if self.announced:
            discovery.remove(self.assistant.settings.data_dir, os.getpid())
            self.announced = False


class Running:
    """A server started by `start_in_thread`: `.url`, `.app`, `.stop()`."""

    def __init__(self, server: Any, thread: threading.Thread, app: Any) -> None:
        self.server = server
        self.thread = thread
        self.app = app

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def start_in_thread(assistant: Any, options: ServeOptions | None = None, host: str = "127.0.0.1") -> Iterator[Running]:
    """Serve `assistant` on a free loopback port in a background thread for the `with` block."""
    from rag.serve.app import create_app

    opts = options or ServeOptions()
    check_bind(host, opts.secured)
    app = create_app(assistant, opts)
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="shvayambhu-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread ended before it started listening")
        threading.Event().wait(0.01)
    running = Running(server, thread, app)
    try:
        yield running
    finally:
        running.stop()
