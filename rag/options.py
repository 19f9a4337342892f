"""Sampling options from settings: the one mapping that the pipeline and the backends share.

It sits beside them, not in either, so a backend never imports the pipeline that calls it.
"""

from __future__ import annotations

from rag.backends.base import GenerationOptions
from rag.config import Settings


def options_for(settings: Settings, backend: str, low_confidence: bool = False) -> GenerationOptions:
    """Sampling options for a backend from its settings section. When the layer judged its evidence weak
    (`low_confidence`), no backend copies: it would re-tell an answer to another question."""
    if backend == "blt":
        b = settings.blt
        return GenerationOptions(
            temperature=b.temperature,
            top_p=b.top_p,
            top_k=b.top_k or None,
            repeat_penalty=b.repeat_penalty,
            seed=b.seed,
            max_tokens=b.max_bytes or None,
            copy_weight=0.0 if low_confidence else b.copy_weight,
        )
    if backend == "mlx":
        m = settings.mlx
        return GenerationOptions(
            temperature=m.temperature,
            top_p=m.top_p,
            top_k=m.top_k or None,
            seed=m.seed,
            max_tokens=m.max_tokens,
            copy_weight=0.0 if low_confidence else m.copy_weight,
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
