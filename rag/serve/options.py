"""The server's own settings: where it listens, the key, the limits. Every limit has a number and an error."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from index.errors import UsageError

KEY_ENV = "SHVAYAMBHU_API_KEY"
LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


@dataclass
class ServeOptions:
    """Settings of one server; `api_key=None` means no key is asked for (loopback only)."""

    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    max_question_bytes: int = 32 * 1024  # the user's question (the last message)
    max_body_bytes: int = 1024 * 1024  # any JSON request body (the whole conversation)
    max_upload_bytes: int = 64 * 1024 * 1024  # an ingest upload
    queue_depth: int = 16  # requests waiting per loaded model before 503
    retry_after: int = 5  # seconds, in the 503's Retry-After
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    allowed_hosts: list[str] = field(default_factory=list)  # Host names answered besides loopback ones ("*": any)
    max_k: int = 100  # the most hits /v1/search returns
    api_keys: list[str] = field(default_factory=list, repr=False)  # "prefix=KEY": sees only sessions `prefix/...`
    key_prefixes: dict[str, str] = field(default_factory=dict, init=False, repr=False)  # key -> prefix

    def __post_init__(self) -> None:
        for name in ("max_question_bytes", "max_body_bytes", "max_upload_bytes", "queue_depth", "max_k"):
            if getattr(self, name) < 1:
                raise UsageError(f"serve option {name} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be 0-65535, not {self.port}")
        self.key_prefixes = parse_api_keys(self.api_keys)

    @property
    def secured(self) -> bool:
        """True when a key is asked for (the admin key or any of [serve] api_keys)."""
        return bool(self.api_key or self.api_keys)


def parse_api_keys(entries: list[str]) -> dict[str, str]:
    """`[serve] api_keys` entries `prefix=KEY` as key -> prefix; UsageError naming a bad entry."""
    out: dict[str, str] = {}
    for i, entry in enumerate(entries):
        prefix, sep, key = entry.partition("=")
        prefix, key = prefix.strip(), key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", prefix) or not key:
            raise UsageError(
                f"[serve] api_keys[{i}]: write `prefix=KEY` (prefix 1-32 of A-Z a-z 0-9 . _ -, KEY not empty)"
            )
        if key in out or prefix in out.values():
            raise UsageError(f"[serve] api_keys[{i}]: prefix {prefix!r} or its key is given twice")
        out[key] = prefix
    return out


def options_from(section: Any | None) -> ServeOptions:
    """ServeOptions from a `[serve]` settings section: any object whose attributes match the field names."""
    if section is None:
        return ServeOptions()
    known = {f.name for f in fields(ServeOptions)}
    values = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else vars(section)
    return ServeOptions(**{k: v for k, v in values.items() if k in known})


def key_from_env(explicit: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The API key: `--api-key` first, else $SHVAYAMBHU_API_KEY; empty means none."""
    env = os.environ if environ is None else environ
    key = explicit if explicit else env.get(KEY_ENV, "")
    return key or None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach."""
    h = host.strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | bool | None) -> None:
    """Refuse to listen beyond loopback without a key."""
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"refusing to listen on {host} without an API key: other machines could use it. "
            f"Pass --api-key KEY or set {KEY_ENV}, or bind 127.0.0.1"
        )
