"""Which backend answers: `ollama`, `mlx`, `blt`, one added with `register_backend`, or `auto`, and what the
built-in ones need for `shvayambhu status`.

Implementations are imported when chosen, so asking with one backend never loads another's libraries.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from blt.blas import status as blas_status
from index.errors import ShvayambhuError
from rag.backends.base import Backend, BackendError
from rag.backends.options import options_for
from rag.config import Settings

Factory = Callable[[Settings, str | None], Backend]  # (settings, model or None) -> a backend


def ollama_backend(settings: Settings, model: str | None = None) -> Backend:
    """An OllamaBackend from the [ollama] settings."""
    from rag.backends.ollama import OllamaBackend  # lazy: each backend loads only when chosen

    o = settings.ollama
    return OllamaBackend(
        settings.ollama_host,
        model or o.model,
        timeout=o.timeout,
        keep_alive=o.keep_alive or None,
        defaults=options_for(settings, "ollama"),
    )


def blt_backend(settings: Settings, model: str | None = None) -> Backend:
    """The BLT backend over `[blt] checkpoint` (the shipped one by default); `model` may name another."""
    from rag.backends.blt import load_backend  # lazy: loads mlx

    return load_backend(settings, model)


def mlx_backend(settings: Settings, model: str | None = None) -> Backend:
    """The pretrained chat model in MLX from the [mlx] settings (the bundled SmolLM2 unless a model is named)."""
    from rag.backends.mlx import load_mlx_backend  # lazy: loads mlx and mlx-lm

    m = settings.mlx
    return load_mlx_backend(
        model or m.model or None,
        dtype=m.dtype,
        max_tokens=m.max_tokens,
        defaults=options_for(settings, "mlx"),
        copy_weight=m.copy_weight,
        prompt_tokens=m.prompt_tokens,
        prompt_style=m.prompt_style,
        adapter=m.adapter or None,
    )


def ollama_answers(settings: Settings, timeout: float = 2.0) -> tuple[bool, str]:
    """(True, models) when the Ollama server answers /api/tags, else (False, why)."""
    from rag.backends.ollama import list_models  # lazy: each backend loads only when chosen

    try:
        models = list_models(settings.ollama_host, timeout=timeout)
    except BackendError as e:
        return False, str(e)
    return True, ", ".join(models) or "no models pulled"


BACKENDS: dict[str, Factory] = {"ollama": ollama_backend, "mlx": mlx_backend, "blt": blt_backend}


def register_backend(name: str, factory: Factory) -> None:
    """Make `factory(settings, model)` the backend called `name` (as `[backend]`, `--backend` in-process, or
    `Shvayambhu.ask(backend=name)`); the backend states what it needs in its `profile`."""
    if not name or name != name.strip() or name == "auto":
        raise BackendError(f"a backend needs a name other than 'auto', without spaces around it: got {name!r}")
    if name in BACKENDS:
        raise BackendError(f"a backend called {name!r} is already registered: pick another name")
    BACKENDS[name] = factory


def select_backend(settings: Settings, name: str, model: str | None = None) -> Backend:
    """A registered backend by name (`ollama`, `mlx`, `blt`, ...) or `auto`: Ollama when its server answers,
    else the MLX model when it is installed, else the BLT. In `auto`, `model` names an Ollama model; the
    fallbacks take it only as a path."""
    if name in BACKENDS:
        return BACKENDS[name](settings, model)
    if name != "auto":
        raise BackendError(f"unknown backend {name!r}: use auto, {', '.join(BACKENDS)}")
    up, why = ollama_answers(settings)
    if up:
        return ollama_backend(settings, model)
    local = model if model and Path(model).expanduser().exists() else None
    reasons = [f"Ollama: {why}"]
    for fallback in (mlx_backend, blt_backend):
        try:
            return fallback(settings, local)
        except BackendError as e:
            reasons.append(f"{fallback.__name__.removesuffix('_backend')}: {e}")
    pull = model or settings.ollama.model
    raise BackendError(
        f"no backend available: start Ollama (`ollama serve`, then `ollama pull {pull}`) or point --ollama-host "
        f"/ OLLAMA_HOST at a running one, or install the MLX model. " + "; ".join(reasons)
    )


def backend_status(settings: Settings) -> dict[str, dict[str, Any]]:
    """Readiness of each backend for `shvayambhu status`: one HTTP call and one checkpoint load."""
    up, why = ollama_answers(settings)
    out = {"ollama": {"ready": up, "detail": f"{settings.ollama_host}: {why}" if up else why}}
    from rag.backends.mlx import mlx_status  # lazy: mlx-lm loads only when asked

    ready, detail = mlx_status()
    if settings.mlx.model:
        try:
            b = mlx_backend(settings)
            ready, detail = True, f"{b.model} ({b.context_tokens}-token context)"
        except ShvayambhuError as e:  # a missing model, or an [mlx] setting it cannot use
            ready, detail = False, str(e)
    out["mlx"] = {"ready": ready, "detail": detail}
    try:
        b = blt_backend(settings)
        detail = f"checkpoint {b.path} ({b.context_bytes}-byte context); {blas_status().message}"
        out["blt"] = {"ready": True, "detail": detail}
    except BackendError as e:
        out["blt"] = {"ready": False, "detail": str(e)}
    return out
