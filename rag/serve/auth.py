"""The API key check: `Authorization: Bearer KEY` on every route but /healthz and the page's static files."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from rag.serve.errors import ApiError, error_response

OPEN_PATHS = {"/healthz", "/", "/index.html", "/favicon.ico"}
OPEN_PREFIXES = ("/static/",)


def key_matches(header: bytes, key: str) -> bool:
    """Constant-time comparison of a Bearer header, as the client sent its bytes, with the key in UTF-8."""
    scheme, _, given = header.partition(b" ")
    if scheme.lower() != b"bearer":
        given = b""
    return hmac.compare_digest(given.strip(), key.encode("utf-8"))


class KeyMiddleware:
    """Answers 401 (in the route's protocol's error shape) when the key is missing or wrong.

    `key` (--api-key) sees every session; each key of `keys` (key -> session prefix, from [serve] api_keys)
    sees only the sessions under its prefix, which the request carries on as `request.state.session_prefix`.
    The page's HTML, script and style hold no data and are served without a key, so a browser can load the
    page and then send the key (which the user types once) with every API call."""

    def __init__(self, app: ASGIApp, key: str | None = None, keys: dict[str, str] | None = None) -> None:
        self.app = app
        self.key = key
        self.keys = dict(keys or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _open(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
        if self.key and key_matches(header, self.key):
            await self.app(scope, receive, send)
            return
        prefix = next((p for k, p in self.keys.items() if key_matches(header, k)), None)
        if prefix is not None:
            scope.setdefault("state", {})["session_prefix"] = prefix
            await self.app(scope, receive, send)
            return
        err = ApiError(401, "missing or wrong API key: send `Authorization: Bearer KEY`", code="invalid_api_key")
        await error_response(scope["path"], err, {"WWW-Authenticate": "Bearer"})(scope, receive, send)


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
