"""Anchoring examples (self-distillation) for retrieval-aware fine-tuning: prompts the layer sends without a
reference — its low-confidence path, and general questions asked with no retrieval — whose target is the base
model's own greedy answer. Trained beside the RAFT examples they keep what the model says where no reference
is given, so the adapter changes how it reads references and not what it knows (the forgetting a run without
them showed). The prompts and the model come from the caller (`generate`); training imports nothing of the
assistant.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from training.data import TrainingError
from training.raft_data import Example

ANCHOR_ROLE = "anchor"
ANCHOR_KINDS = ("unreferenced", "general")  # the layer's no-reference prompt; a question asked with no retrieval


@dataclass
class AnchorPrompt:
    """A prompt the model reads without a reference: its question, messages, kind and split."""

    question: str
    messages: list[dict[str, str]]
    kind: str
    split: str = "train"


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def whole_sentences(text: str) -> str:
    """`text` cut after its last complete sentence (an answer the token limit stopped mid-sentence), so an
    anchor does not teach the model to stop mid-sentence; unchanged when it has no sentence end at all."""
    text = text.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else text


def anchor_count(examples: int, share: float) -> int:
    """How many anchors make `share` of the final set when `examples` others are kept."""
    if not 0.0 <= share < 1.0:
        raise TrainingError(f"anchor share must be from 0 to below 1, got {share}")
    return round(examples * share / (1.0 - share))


def _key(seed: int, text: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x1fanchor\x1f{text}".encode(), digest_size=8).digest()


def pick_anchors(prompts: Sequence[AnchorPrompt], count: int, *, seed: int = 0) -> list[AnchorPrompt]:
    """`count` prompts in a stable pseudo-random order, the kinds taken in turn (so both are anchored), one per
    question text."""
    by_kind: dict[str, list[AnchorPrompt]] = {}
    seen: set[tuple[str, str]] = set()
    for p in sorted(prompts, key=lambda p: _key(seed, p.kind + "\x1f" + p.question)):
        if (p.kind, p.question) not in seen:
            seen.add((p.kind, p.question))
            by_kind.setdefault(p.kind, []).append(p)
    queues = [v[::-1] for _, v in sorted(by_kind.items())]
    out: list[AnchorPrompt] = []
    while len(out) < count and any(queues):
        for q in queues:
            if q and len(out) < count:
                out.append(q.pop())
    return out


def anchor_examples(
    prompts: Sequence[AnchorPrompt],
    generate: Callable[[list[list[dict[str, str]]]], list[str]],
    *,
    batch: int = 16,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Example], int]:
    """One example per prompt whose target is what `generate` (the base model, greedy) says to it, asked in
    batches of `batch`; prompts it answers with nothing are left out (their count is returned)."""
    if batch < 1:
        raise TrainingError(f"anchor batch must be at least 1, got {batch}")
    out: list[Example] = []
    empty = 0
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        said = generate([p.messages for p in chunk])
        if len(said) != len(chunk):
            raise TrainingError(f"the model gave {len(said)} answers to {len(chunk)} anchor prompts")
        for p, text in zip(chunk, said, strict=True):
            text = text.strip()
            if not text:
                empty += 1
                continue
            out.append(Example(p.question, p.messages, text, ANCHOR_ROLE, p.kind, "", p.split))
        if progress is not None:
            progress(start + len(chunk))
    return out, empty
