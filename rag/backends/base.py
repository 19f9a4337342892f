"""What every generation backend gives the consciousness layer: one small protocol and two dataclasses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from index.errors import ShvayambhuError


class BackendError(ShvayambhuError, RuntimeError):
    """A backend failed in a way the user can act on; the message says what to do."""


@dataclass
class GenerationOptions:
    """Sampling options common to every backend; each backend maps what it understands."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    num_ctx: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    max_tokens: int | None = None  # Ollama num_predict; BLT max bytes
    copy_weight: float | None = None  # BLT: how much of the retrieved answers to copy ([blt] copy_weight)
    copy_sources: list[str] | None = None  # the retrieved answers the pipeline hands to a backend for copy-mixing


@dataclass
class Generation:
    """One finished answer from a backend."""

    text: str
    model: str
    backend: str
    done_reason: str = "stop"  # "stop" or "length"
    # Per-token (Ollama) or per-byte (BLT) probabilities of what was emitted, when the backend gives them.
    probs: list[float] | None = None
    entropies: list[float] | None = None
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds


@dataclass
class Chunk:
    """A piece of a streamed answer; the last chunk has ``done=True`` and carries the full Generation."""

    text: str
    done: bool = False
    generation: Generation | None = None


class Backend(Protocol):
    """A generator. ``messages`` are chat messages: dicts with ``role`` (system/user/assistant) and ``content``.

    Backends that decode raw bytes (the BLT) flatten the messages in their own trained format.
    """

    name: str
    model: str

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation: ...

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[Chunk]: ...

    def available(self) -> bool:
        """True when the backend can answer now (server reachable and model present / checkpoint loadable)."""
        ...
