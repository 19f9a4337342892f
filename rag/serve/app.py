"""The FastAPI application: routes of both protocols and ours, the page, auth, limits, errors, CORS."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from index.errors import ShvayambhuError
from rag.serve import ask_api, ollama_api, openai_api, ours
from rag.serve.auth import KeyMiddleware
from rag.serve.errors import handle_http, handle_ours, handle_validation
from rag.serve.generation import Engine
from rag.serve.guard import GuardMiddleware
from rag.serve.limits import BodyLimitMiddleware
from rag.serve.options import ServeOptions, is_loopback
from rag.serve.queue import ModelQueue

STATIC = Path(__file__).resolve().parent / "static"


def create_app(assistant: Any, options: ServeOptions | None = None, *, warm: bool = True) -> FastAPI:
    """An app serving `assistant` (a `rag.Shvayambhu`); `warm` loads the store and embedding model at start."""
    options = options or ServeOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if warm:  # load once before the first request instead of racing to load in several threads
            await anyio.to_thread.run_sync(lambda: (assistant.client, assistant.embedder))
        yield

    app = FastAPI(title="Shvayambhu", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.options = options
    app.state.engine = Engine(assistant, ModelQueue(options.queue_depth, options.retry_after))
    app.state.started = time.time()
    app.state.status_cache = None
    for router in (openai_api.router, ollama_api.router, ours.router, ask_api.router):
        app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, handle_http)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(ShvayambhuError, handle_ours)
    app.add_exception_handler(Exception, handle_ours)  # a bug still answers JSON (500) in the route's shape

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Middleware runs outside-in in reverse order of adding: CORS, Host/Origin/body type, the key, the limits.
    app.add_middleware(BodyLimitMiddleware, max_body=options.max_body_bytes, max_upload=options.max_upload_bytes)
    if options.secured:
        app.add_middleware(KeyMiddleware, key=options.api_key, keys=options.key_prefixes)
    app.add_middleware(
        GuardMiddleware,
        check_host=is_loopback(options.host) or bool(options.allowed_hosts),
        allowed_hosts=options.allowed_hosts,
        cors_origins=options.cors_origins,
    )
    if options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["*"], allow_headers=["*"])
    return app
