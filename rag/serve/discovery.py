"""How a CLI finds a running `shvayambhu serve` for its data directory: `<data dir>/serve.json`.

The server writes the file (atomically) once it listens and removes it when it exits; it names the pid, the
address and a digest of the settings that shape an answer, so a client with other settings answers itself.
A file whose pid is gone or whose port refuses connections is stale: the client ignores and removes it.
Imports nothing heavy: the CLI reads this before deciding whether to load anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

FILE_NAME = "serve.json"
# Settings a request names itself (the session, the backend), and the server's own: not part of the digest.
PER_REQUEST = ("serve", "session", "backend")


def server_file(data_dir: Path) -> Path:
    """Where a server for `data_dir` announces itself."""
    return Path(data_dir) / FILE_NAME


def settings_digest(settings: Any) -> str:
    """A short hash of everything in `settings` (a rag.config.Settings) that changes an answer, except what a
    request carries itself (session, backend); the data folder is compared as an absolute path, the Ollama
    host as resolved (flag, setting or $OLLAMA_HOST)."""
    d = dataclasses.asdict(settings)
    for name in PER_REQUEST:
        d.pop(name, None)
    d["store"]["data_dir"] = str(Path(settings.data_dir).expanduser().resolve())
    d["ollama"]["host"] = settings.ollama_host  # $OLLAMA_HOST counts too
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def client_host(host: str) -> str:
    """The address a local client connects to for a server bound to `host` (a wildcard means loopback)."""
    h = host.strip("[]")
    if h in ("", "0.0.0.0"):
        return "127.0.0.1"
    if h == "::":
        return "::1"
    return h


def write(settings: Any, host: str, port: int, auth: bool) -> Path:
    """Announce this process's server for `settings.data_dir`; returns the file's path."""
    path = server_file(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "pid": os.getpid(),
        "host": client_host(host),
        "port": port,
        "auth": auth,
        "settings": settings_digest(settings),
        "started": round(time.time(), 3),
    }
    fd, tmp = tempfile.mkstemp(prefix=".serve-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def read(data_dir: Path) -> dict[str, Any] | None:
    """The announcement in `data_dir`, or None when there is none or it is not one (a torn or foreign file)."""
    try:
        info = json.loads(server_file(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(info, dict) and isinstance(info.get("pid"), int) and isinstance(info.get("port"), int)
    return info if ok and isinstance(info.get("host"), str) else None


def remove(data_dir: Path, pid: int) -> None:
    """Remove the announcement if it is still `pid`'s (a newer server's file stays)."""
    info = read(data_dir)
    if info is not None and info["pid"] == pid:
        server_file(data_dir).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
