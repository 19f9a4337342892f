"""Sampling options from a backend's settings section: what each backend's profile asks with."""

from __future__ import annotations

import dataclasses

from rag.backends.base import GenerationOptions
from rag.config import Settings


def options_for(settings: Settings, backend: str, low_confidence: bool = False) -> GenerationOptions:
    """Sampling options for a built-in backend (`blt`, `mlx`, `ollama`) from its settings section, as
    `for_confidence` gives them when the layer judged its evidence weak (`low_confidence`)."""
    return for_confidence(_from_section(settings, backend), low_confidence)


def for_confidence(options: GenerationOptions, low_confidence: bool) -> GenerationOptions:
    """A copy of `options` for one question. When the layer judged its evidence weak (`low_confidence`), no
    backend copies: it would re-tell an answer to another question."""
    out = dataclasses.replace(options)
    if low_confidence and out.copy_weight:
        out.copy_weight = 0.0
    return out


def _from_section(settings: Settings, backend: str) -> GenerationOptions:
    if backend in ("blt", "mlx"):  # the same sampling fields; the BLT's limit is in bytes
        local = settings.blt if backend == "blt" else settings.mlx
        limit = settings.blt.max_bytes or None if backend == "blt" else settings.mlx.max_tokens
        return GenerationOptions(
            temperature=local.temperature,
            top_p=local.top_p,
            top_k=local.top_k or None,
            repeat_penalty=local.repeat_penalty,
            seed=local.seed,
            max_tokens=limit,
            copy_weight=local.copy_weight,
        )
    o = settings.ollama
    return GenerationOptions(
        temperature=o.temperature,
        top_p=o.top_p,
        top_k=o.top_k,
        repeat_penalty=o.repeat_penalty,
        num_ctx=o.num_ctx,
        seed=None if o.seed < 0 else o.seed,
        max_tokens=o.max_tokens,
    )
