"""Which backend answers: `ollama`, `blt`, or `auto`, and what each needs for `shvayambhu status`.

Implementations are imported when chosen, so asking with one backend never loads another's libraries.
"""

from __future__ import annotations

from typing import Any

from blt.blas import status as blas_status
from rag.backends.base import Backend, BackendError
from rag.config import Settings


def ollama_backend(settings: Settings, model: str | None = None) -> Backend:
    """An OllamaBackend from the [ollama] settings."""
    from rag.backends.ollama import OllamaBackend  # lazy: each backend loads only when chosen

    o = settings.ollama
    return OllamaBackend(settings.ollama_host, model or o.model, timeout=o.timeout, keep_alive=o.keep_alive or None)


def blt_backend(settings: Settings, model: str | None = None) -> Backend:
    """The BLT backend over `[blt] checkpoint` (the shipped one by default); `model` may name another."""
    from rag.backends.blt import load_backend  # lazy: loads mlx

    return load_backend(settings, model)


def ollama_answers(settings: Settings, timeout: float = 2.0) -> tuple[bool, str]:
    """(True, models) when the Ollama server answers /api/tags, else (False, why)."""
    from rag.backends.ollama import list_models  # lazy: each backend loads only when chosen

    try:
        models = list_models(settings.ollama_host, timeout=timeout)
    except BackendError as e:
        return False, str(e)
    return True, ", ".join(models) or "no models pulled"


def select_backend(settings: Settings, name: str, model: str | None = None) -> Backend:
    """`ollama`, `blt`, or `auto`: Ollama when its server answers, else the BLT when a checkpoint loads."""
    if name == "ollama":
        return ollama_backend(settings, model)
    if name == "blt":
        return blt_backend(settings, model)
    if name != "auto":
        raise BackendError(f"unknown backend {name!r}: use ollama, blt or auto")
    up, why = ollama_answers(settings)
    if up:
        return ollama_backend(settings, model)
    try:
        return blt_backend(settings, model)
    except BackendError as e:
        blt_why = str(e)
    pull = model or settings.ollama.model
    raise BackendError(
        f"no backend available: start Ollama (`ollama serve`, then `ollama pull {pull}`) "
        f"or point --ollama-host / OLLAMA_HOST at a running one; the BLT backend is not usable either "
        f"({blt_why}). Ollama: {why}"
    )


def backend_status(settings: Settings) -> dict[str, dict[str, Any]]:
    """Readiness of each backend for `shvayambhu status`: one HTTP call and one checkpoint load."""
    up, why = ollama_answers(settings)
    out = {"ollama": {"ready": up, "detail": f"{settings.ollama_host}: {why}" if up else why}}
    try:
        b = blt_backend(settings)
        detail = f"checkpoint {b.path} ({b.context_bytes}-byte context); {blas_status().message}"
        out["blt"] = {"ready": True, "detail": detail}
    except BackendError as e:
        out["blt"] = {"ready": False, "detail": str(e)}
    return out
