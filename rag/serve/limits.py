"""Request size limits, enforced while the body arrives: over a limit is 413 saying what the limit is."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.serve.errors import ApiError, error_response

UPLOAD_PATHS = {"/v1/ingest"}


def too_large(what: str, size: int | None, limit: int) -> ApiError:
    got = f" ({size:,} bytes)" if size is not None else ""
    return ApiError(413, f"{what} is too large{got}: the limit is {limit:,} bytes", code="request_too_large")


class BodyLimitMiddleware:
    """Refuses bodies over the route's limit: by Content-Length up front, else by counting what arrives."""

    def __init__(self, app: ASGIApp, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        upload = path in UPLOAD_PATHS
        limit = self.max_upload if upload else self.max_body
        what = "the upload" if upload else "the request body"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(path, too_large(what, int(value), limit))(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(what, None, limit)
            return message

        await self.app(scope, counted, send)
