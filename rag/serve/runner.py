"""Starting the server: in the foreground for `shvayambhu serve`, or in a thread for tests and benchmarks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

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
    """Serve until interrupted. Refuses a non-loopback `host` without a key (`api_key` or $SHVAYAMBHU_API_KEY)."""
    import uvicorn  # lazy: only the server needs it

    key = key_from_env(api_key)
    opts = replace(options or ServeOptions(), host=host, port=port, api_key=key)
    check_bind(host, key or opts.secured)
    uvicorn.run(build(settings, opts), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


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
    import uvicorn  # lazy: only the server needs it

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
