"""Errors as JSON in each protocol's own shape: Ollama's `{"error": "..."}` under /api/, OpenAI's elsewhere."""

from __future__ import annotations

import errno
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from index.errors import ShvayambhuError
from index.store import DiskFull, explain
from rag.backends.base import BackendError

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    503: "server_error",
    507: "server_error",
}


class ApiError(HTTPException):
    """An HTTP error with a message a user can act on; `code` is OpenAI's machine-readable code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message = message
        self.code = code
        self.param = param


def from_exception(e: Exception) -> ApiError:
    """Our errors as HTTP statuses: a backend that cannot answer 503, a full disk 507, other user errors 400, a bug
    500."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, BackendError):
        return ApiError(503, str(e), code="backend_unavailable")
    known = explain(e)  # a store failure raised outside `translating`: full disk, damaged file
    if isinstance(known, DiskFull):
        return ApiError(507, str(known), code="insufficient_storage")
    if known is not None:
        e = known
    full = isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOSPC
    if isinstance(e, ShvayambhuError) and full:  # e.g. the lexical index could not be saved
        return ApiError(507, str(e), code="insufficient_storage")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:  # the CLI's words (rag.cli.errors)
        where = f"{e.filename}: " if e.filename else ""
        return ApiError(
            507, f"{where}the disk is full: free some space and run the command again", code="insufficient_storage"
        )
    if isinstance(e, ShvayambhuError):
        return ApiError(400, str(e), code=type(e).__name__)
    return ApiError(500, f"internal error: {type(e).__name__}: {e}", code="internal_error")


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/")


def error_body(path: str, err: ApiError) -> dict[str, Any]:
    """The JSON body of `err` in the protocol of `path`."""
    if is_ollama_path(path):
        return {"error": err.message}
    kind = OPENAI_TYPES.get(err.status_code, "server_error" if err.status_code >= 500 else "invalid_request_error")
    return {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}


def error_response(path: str, err: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        error_body(path, err), status_code=err.status_code, headers={**(err.headers or {}), **(headers or {})}
    )


async def handle_http(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's and Starlette's HTTP errors (404 route, 405 method) and ours, in the route's shape."""
    if isinstance(exc, ApiError):
        return error_response(request.url.path, exc)
    assert isinstance(exc, HTTPException) or hasattr(exc, "status_code")
    return error_response(request.url.path, ApiError(exc.status_code, str(exc.detail), headers=exc.headers))


async def handle_validation(request: Request, exc: Exception) -> JSONResponse:
    """A body that does not parse or has a field of the wrong type: 400 naming the field."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = f"{where}: {first.get('msg', 'invalid request')}"
    return error_response(request.url.path, ApiError(400, msg, param=where))


async def handle_ours(request: Request, exc: Exception) -> JSONResponse:
    """ShvayambhuError (and anything unexpected) raised by a route."""
    return error_response(request.url.path, from_exception(exc))
