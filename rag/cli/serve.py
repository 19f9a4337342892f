"""`shvayambhu serve`: the OpenAI- and Ollama-compatible HTTP API and the web page."""

from __future__ import annotations

from typing import Annotated

import typer

from rag.cli.common import BackendOpt, settings
from rag.cli.extras import require_extra


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on; beyond loopback an API key is required.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [8765].")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", help="Require `Authorization: Bearer KEY` [$SHVAYAMBHU_API_KEY].", show_default=False
        ),
    ] = None,
    backend: BackendOpt = None,
    queue_depth: Annotated[int | None, typer.Option(help="Requests waiting per model before 503 [16].")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help="Largest ingest upload in MiB [64].")] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow this browser origin (repeatable); CORS is off without one.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level: warning hides the access log.")] = "info",
) -> None:
    """Serve the assistant over HTTP: OpenAI (/v1/chat/completions, /v1/models, /v1/embeddings) and Ollama
    (/api/chat, /api/generate, /api/tags, ...) protocols, search/ingest/memory routes, and a web page at /."""
    require_extra("serve", "serve")
    from rag.serve.command import section  # lazy: FastAPI and uvicorn load only for this command
    from rag.serve.command import serve as serve_with

    st = settings(backend=backend, serve=section(host, port, queue_depth, max_upload_mb, cors_origin))
    serve_with(st, api_key, log_level)
