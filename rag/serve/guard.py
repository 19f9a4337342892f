"""Who may talk to the server at all: requests for one of its own host names (no DNS rebinding), from no web
page or its own (no cross-site requests), with bodies a foreign page cannot send without asking first.

A web page on another origin can send a "simple" request (a POST of text/plain, a form, multipart) to any
address without the browser asking the server first, and it can rebind its own name to 127.0.0.1 to read the
answers. So, before any route runs:
- Host: when the server listens on loopback (or `[serve] allowed_hosts` is set), the request's Host must be a
  loopback name or address or one of `allowed_hosts` ("*" allows any).
- Origin: when a browser says which page sent the request, that page must be the server's own (or one of
  `[serve] cors_origins`).
- Bodies: POST, PUT and PATCH take `application/json`; /v1/ingest also takes its file types, and the simple
  types (text/plain, multipart, no type) only from the server's own page or with a header no simple request
  can carry (`X-Shvayambhu-*`, `Authorization`).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from rag.serve.errors import ApiError, error_response
from rag.serve.limits import UPLOAD_PATHS
from rag.serve.options import is_loopback

WRITE_METHODS = {"POST", "PUT", "PATCH"}
SIMPLE_TYPES = {"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
PROOF_PREFIX = b"x-shvayambhu-"
log = logging.getLogger(__name__)


def host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8765` -> `::1`, `localhost:8765` -> `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def media_type(value: str) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return value.split(";")[0].strip().lower()


def is_json(ctype: str) -> bool:
    """application/json and its `+json` relatives."""
    return ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))


class GuardMiddleware:
    """Refuses requests for a foreign Host (403), from a foreign Origin (403), and state-changing requests with a
    body type a cross-site page could send unasked (415), in the route's protocol's error shape."""

    def __init__(self, app: ASGIApp, *, check_host: bool, allowed_hosts: list[str], cors_origins: list[str]) -> None:
        self.app = app
        self.check_host = check_host
        self.allowed_hosts = {host_name(h) for h in allowed_hosts}
        self.origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            err = self.refusal(scope)
            if err is not None:
                log.warning("refused %s %s: %s", scope["method"], scope["path"], err.message)
                await error_response(scope["path"], err)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def host_allowed(self, host: str) -> bool:
        """A loopback name or address, or one the operator allowed; an absent Host is not a browser's."""
        name = host_name(host)
        return not name or is_loopback(name) or name in self.allowed_hosts or "*" in self.allowed_hosts

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The server's own page (same scheme-less host and port) or a configured CORS origin."""
        origin = origin.rstrip("/").lower()
        scheme, _, netloc = origin.partition("://")
        own = scheme in ("http", "https") and bool(netloc) and netloc == host.strip().lower()
        return own or origin in self.origins or "*" in self.origins

    def refusal(self, scope: Scope) -> ApiError | None:
        """Why this request is refused, or None."""
        headers: dict[bytes, str] = {}
        proof = False
        for name, value in scope.get("headers", []):
            headers[name] = value.decode("latin-1")
            proof = proof or name.startswith(PROOF_PREFIX) or name == b"authorization"
        host = headers.get(b"host", "")
        if self.check_host and not self.host_allowed(host):
            return ApiError(
                403,
                f"Host {host_name(host)!r} is not a name of this server: it answers loopback names only; "
                "add the name to [serve] allowed_hosts if it is yours",
                code="host_not_allowed",
            )
        origin = headers.get(b"origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return ApiError(
                403,
                f"requests from the web page at {origin} are refused: only this server's own page may call it "
                "(add the origin to [serve] cors_origins to allow it)",
                code="origin_not_allowed",
            )
        if scope["method"] not in WRITE_METHODS:
            return None
        ctype = media_type(headers.get(b"content-type", ""))
        if scope["path"] in UPLOAD_PATHS:
            if ctype not in SIMPLE_TYPES or origin is not None or proof:
                return None
            return ApiError(
                415,
                f"an upload sent as {ctype or 'no content type'} needs an X-Shvayambhu-* header (any, e.g. "
                "X-Shvayambhu-Session) or the server's own page: send JSONL as application/jsonl, Markdown as "
                "text/markdown",
                code="unsupported_media_type",
            )
        if is_json(ctype):
            return None
        return ApiError(
            415,
            f"the body must be JSON sent with Content-Type: application/json, not {ctype or 'no content type'}",
            code="unsupported_media_type",
        )
