"""Anchoring examples for `shvayambhu finetune`: the prompts the layer sends without a reference, answered by
the base model itself (greedy, through the MLX backend's `generate_batch`), so the adapter keeps its general
behaviour (training.anchors)."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from typing import Any

ANCHOR_TOKENS = 48
ANCHOR_BATCH = 16


def base_generate(backend: Any, max_tokens: int = ANCHOR_TOKENS) -> Any:
    """messages list -> the base model's greedy answers, decoded as the layer's backend decodes a prompt with no
    reference (its own sampling options, temperature 0; nothing to copy from, so copy mixing does nothing);
    one the token limit cut is kept to its whole sentences."""
    from training.anchors import whole_sentences

    opts = dataclasses.replace(backend.profile.options, temperature=0.0, max_tokens=max_tokens, copy_sources=None)

    def generate(batch: list[list[dict[str, str]]]) -> list[str]:
        said = backend.generate_batch(batch, opts)
        return [whole_sentences(g.text) if g.done_reason == "length" else g.text for g in said]

    return generate


def general_prompts(a: Any, backend: Any, items: list[Any], count: int, seed: int) -> list[Any]:
    """Up to `count` of the planned questions as the layer asks them with no retrieval (the general path)."""
    from training.anchors import AnchorPrompt

    def key(question: str) -> bytes:
        return hashlib.blake2b(f"{seed}\x1fgeneral\x1f{question}".encode(), digest_size=8).digest()

    out, seen = [], set()
    for it in sorted(items, key=lambda i: key(i.question)):
        if len(out) >= count:
            break
        if it.question in seen:
            continue
        seen.add(it.question)
        prep = a.prepare(it.question, backend=backend, use_memory=False, use_retrieval=False)
        out.append(AnchorPrompt(it.question, prep.messages, "general", it.split))
    return out


def add_anchors(
    a: Any,
    backend: Any,
    examples: list[Any],
    items: list[Any],
    unreferenced: list[tuple[str, list[dict[str, str]], str]],
    *,
    share: float = 0.3,
    tokens: int = ANCHOR_TOKENS,
    batch: int = ANCHOR_BATCH,
    seed: int = 0,
) -> tuple[list[Any], dict[str, Any]]:
    """`examples` and anchors making `share` of the whole, half from the layer's no-reference prompts
    (`unreferenced`) and half from planned questions asked with no retrieval; (examples, what was added)."""
    from training.anchors import AnchorPrompt, anchor_count, anchor_examples, pick_anchors

    count = anchor_count(len(examples), share)
    info: dict[str, Any] = {"share": share, "tokens": tokens, "asked": 0, "empty": 0, "unreferenced": 0, "general": 0}
    if count == 0:
        return examples, info
    pool = [AnchorPrompt(q, m, "unreferenced", split) for q, m, split in unreferenced]
    pool += general_prompts(a, backend, items, count, seed)
    chosen = pick_anchors(pool, count, seed=seed)
    anchors, empty = anchor_examples(chosen, base_generate(backend, tokens), batch=batch, progress=_progress(count))
    info.update(asked=len(chosen), empty=empty)
    for e in anchors:
        info[e.kind] += 1
    return examples + anchors, info


def _progress(total: int) -> Any:
    def show(n: int) -> None:
        sys.stderr.write(f"anchors from the base model: {n}/{total}\n")
        sys.stderr.flush()

    return show
