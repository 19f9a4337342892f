"""Request limits, enforced while the body arrives: over a size limit is 413 saying what the limit is, and a
JSON body nested deeper than MAX_DEPTH is 400 before any parser recurses into it."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.serve.errors import ApiError, error_response

UPLOAD_PATHS = {"/v1/ingest"}
MAX_DEPTH = 64  # OpenAI and Ollama requests nest under 10 deep; Python's JSON parser fails near 1,000
_OUTSIDE = re.compile(rb'[\[\]{}"]')
_INSIDE = re.compile(rb'["\\]')


class DepthGauge:
    """Follows a JSON text's nesting chunk by chunk (strings and escapes understood) without parsing it."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the chunk ended inside a string right after a backslash

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; False once the nesting went deeper than the limit."""
        pos, n = 0, len(chunk)
        if self.escaped and n:
            pos, self.escaped = 1, False
        while True:
            m = (_INSIDE if self.in_string else _OUTSIDE).search(chunk, pos)
            if m is None:
                return True
            c, pos = chunk[m.start()], m.end()
            if self.in_string:
                if c == 0x22:  # "
                    self.in_string = False
                elif pos >= n:  # a backslash ending the chunk escapes the next chunk's first byte
                    self.escaped = True
                else:
                    pos += 1
            elif c == 0x22:
                self.in_string = True
            elif c in b"[{":
                self.depth += 1
                if self.depth > self.limit:
                    return False
            else:
                self.depth -= 1


def too_deep() -> ApiError:
    return ApiError(400, f"the body is nested more than {MAX_DEPTH} levels deep", code="too_deep")


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
        gauge = None
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(path, too_large(what, int(value), limit))(scope, receive, send)
                return
            if name == b"content-type" and not upload and b"json" in value.lower():
                gauge = DepthGauge()
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(what, None, limit)
                if gauge is not None and not gauge.feed(message.get("body", b"")):
                    raise too_deep()
            return message

        await self.app(scope, counted, send)
