"""Shvayambhu's own routes: search, ingest (an uploaded corpus), session memories, status, health."""

from __future__ import annotations

import inspect
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request

from rag.consciousness.session_names import KEY_SEPARATOR
from rag.serve.errors import ApiError
from rag.serve.generation import key_prefix, session_of
from rag.serve.schemas import SearchRequest

router = APIRouter()
EXTENSIONS = (".jsonl", ".json", ".txt", ".md")
CONTENT_TYPES = {
    "application/jsonl": ".jsonl",
    "application/x-ndjson": ".jsonl",
    "application/json": ".json",
    "text/plain": ".txt",
    "text/markdown": ".md",
}
STATUS_TTL = 30.0  # seconds a backend-readiness check is reused (it loads a checkpoint and calls Ollama)


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    """`{"status": "ok", "warm": bool}`: warm once the server's first question has run (rag.serve.warmup)."""
    return {"status": "ok", "warm": bool(getattr(request.app.state.engine, "warm", False))}


@router.post("/v1/search")
async def search(request: Request, body: SearchRequest) -> list[dict[str, Any]]:
    """`{"query", "k", "where", "mode", "mmr", "min_score"}` -> hits as `search --json` prints them."""
    opts = request.app.state.options
    if len(body.query.encode("utf-8")) > opts.max_question_bytes:
        raise ApiError(413, f"query is over the limit of {opts.max_question_bytes:,} bytes", param="query")
    if body.k > opts.max_k:
        raise ApiError(400, f"k: an integer from 1 to {opts.max_k}", param="k")
    kwargs: dict[str, Any] = {"where": body.where or None}
    if body.mmr is not None:
        kwargs["mmr"] = body.mmr
    if body.min_score is not None:
        kwargs["min_score"] = body.min_score
    assistant = request.app.state.engine.assistant
    if body.mode is not None:
        if "mode" in inspect.signature(assistant.search).parameters:
            kwargs["mode"] = body.mode
        elif body.mode != "dense":
            raise ApiError(400, f"mode {body.mode!r}: this build searches dense only", param="mode")
    hits = await anyio.to_thread.run_sync(lambda: assistant.search(body.query, body.k, **kwargs))
    return [h.to_dict() for h in hits]


def safe_name(name: str | None, default_ext: str) -> str:
    """A file name for an upload: the client's base name with unsafe characters replaced, never a path."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100] or f"upload{default_ext}"
    if not base.lower().endswith(EXTENSIONS):
        if name:
            raise ApiError(400, f"{base}: upload .jsonl, .json, .txt or .md files", param="file")
        base += default_ext
    return base


@router.post("/v1/ingest")
async def ingest(request: Request) -> dict[str, Any]:
    """A JSONL (or JSON/text/Markdown) body, or multipart files: validated, embedded, stored; rejections listed."""
    strict = request.query_params.get("strict", "").lower() in ("1", "true", "yes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    assistant = request.app.state.engine.assistant
    # Uploads live under <data dir>/uploads/<name>: the same name is the same source, so an edited file replaces
    # its old records, as a re-ingested file does. Nothing a client sends names a path outside that folder.
    uploads = assistant.settings.data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    files: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=uploads) as tmp:
        staged: dict[Path, str] = {}
        if ctype == "multipart/form-data":
            form = await request.form(max_files=16, max_fields=16)
            for i, item in enumerate(form.getlist("file")):
                if isinstance(item, str):
                    raise ApiError(400, "file: send files, not text fields", param="file")
                path = Path(tmp) / f"{i}"
                path.write_bytes(await item.read())
                staged[path] = safe_name(item.filename, ".jsonl")
            if not staged:
                raise ApiError(400, "multipart upload without a `file` part", param="file")
        else:
            ext = CONTENT_TYPES.get(ctype, ".jsonl")
            path = Path(tmp) / "body"
            with path.open("wb") as f:
                async for part in request.stream():
                    f.write(part)
            if path.stat().st_size == 0:
                raise ApiError(400, "the upload is empty", param="body")
            staged[path] = safe_name(request.query_params.get("name"), ext)
        for path, name in staged.items():
            final = (uploads / name).resolve()
            os.replace(path, final)  # whole files only: a reader never sees a half-written upload
            files[final] = name
    summary = await anyio.to_thread.run_sync(lambda: assistant.ingest(list(files), strict=strict, progress=False))
    names = {str(p): n for p, n in files.items()}
    d = summary.to_dict()
    d["rejections"] = [
        {"file": names.get(r.file, Path(r.file).name), "line": r.line, "reason": r.reason} for r in summary.rejections
    ]
    return d


def _session(session: str, request: Request) -> str:
    """The memory session a URL names, by the rule the header and `user` follow (and the key's prefix)."""
    name = session_of(session, None, key_prefix(request))
    if name is None:
        raise ApiError(400, "session: name one in the URL", param="session")
    return name


def _shown(session: str, request: Request) -> str:
    """A session as its client names it: without its key's prefix."""
    prefix = key_prefix(request)
    return session[len(prefix) + len(KEY_SEPARATOR) :] if prefix else session


@router.get("/v1/sessions")
async def sessions(request: Request) -> dict[str, Any]:
    """Sessions that have memories, for the page's session picker; under a prefixed key only its own."""
    assistant = request.app.state.engine.assistant
    names = await anyio.to_thread.run_sync(lambda: assistant.sessions())
    prefix = key_prefix(request)
    if prefix:
        names = [_shown(n, request) for n in names if n.startswith(prefix + KEY_SEPARATOR)]
    return {"sessions": names, "default": assistant.settings.session}


@router.get("/v1/sessions/{session}/memories")
async def memories(session: str, request: Request, limit: int = 100, kind: str | None = None) -> dict[str, Any]:
    memory = request.app.state.engine.assistant.memory(_session(session, request))
    mems = await anyio.to_thread.run_sync(lambda: memory.list(kind=kind, limit=max(1, min(limit, 1000))))
    out = [{**m.to_dict(), "session": _shown(m.session, request)} for m in reversed(mems)]
    return {"session": _shown(memory.session, request), "memories": out}


@router.delete("/v1/sessions/{session}/memories")
async def clear_memories(session: str, request: Request) -> dict[str, Any]:
    """Forget the memories named in `?ids=a,b` (ids or unique prefixes; an empty list forgets nothing), or without
    `ids` all of the session's."""
    memory = request.app.state.engine.assistant.memory(_session(session, request))
    if "ids" in request.query_params:
        ids = [i.strip() for i in request.query_params["ids"].split(",") if i.strip()]
        n = await anyio.to_thread.run_sync(lambda: memory.forget(ids) if ids else 0)
    else:
        n = await anyio.to_thread.run_sync(memory.clear)
    return {"session": _shown(memory.session, request), "deleted": n}


@router.delete("/v1/sessions/{session}/memories/{memory_id}")
async def forget_memory(session: str, memory_id: str, request: Request) -> dict[str, Any]:
    memory = request.app.state.engine.assistant.memory(_session(session, request))
    n = await anyio.to_thread.run_sync(lambda: memory.forget([memory_id]))
    return {"session": _shown(memory.session, request), "deleted": n}


@router.get("/v1/status")
async def status(request: Request) -> dict[str, Any]:
    """The store and backends (as `shvayambhu status --json`) and the server: queue, limits, models."""
    state = request.app.state
    cached = state.status_cache
    if cached is None or time.monotonic() - cached[0] > STATUS_TTL:
        info = await anyio.to_thread.run_sync(state.engine.assistant.status)
        cached = state.status_cache = (time.monotonic(), info)
    opts = state.options
    server = {
        "queue": state.engine.queue.snapshot(),
        "queue_depth": opts.queue_depth,
        "auth": opts.secured,
        "limits": {
            "question_bytes": opts.max_question_bytes,
            "body_bytes": opts.max_body_bytes,
            "upload_bytes": opts.max_upload_bytes,
        },
        "uptime_s": round(time.time() - state.started, 1),
    }
    return {**cached[1], "server": server}
