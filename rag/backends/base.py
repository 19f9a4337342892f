"""What every generation backend gives the consciousness layer: one small protocol, its prompt profile, and the
dataclasses a generation travels in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    copy_sources: list[str] | None = None  # MLX: the retrieved answers to copy from (most relevant last)


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


Messages = list[dict[str, str]]
PROMPT_STYLES = ("full", "compact")  # the consciousness layer's own layouts (rag.consciousness.prompt)
BUDGET_UNITS = ("bytes", "tokens")


@dataclass(frozen=True)
class PromptProfile:
    """Everything the consciousness layer needs to know of a backend to build its prompt and ask it; the
    pipeline reads this and never a backend's name or settings section. The defaults are a chat model that
    reads the layer's full prompt within the [workspace] budget.

    Budget: `unit` is what the prompt budget counts ("bytes" or "tokens"; None: the layer's choice, tokens
    when [workspace] budget_tokens is set, else bytes); `budget` is the backend's own budget in that unit
    (None: [workspace] budget_<unit>); `budget_cap` caps the [workspace] budget to what its context holds.
    `measure` is the cost of a text in `unit` and `count` the cost of whole messages (chat template
    included); None: the layer's estimate for `unit`, summed over the message contents.

    Prompt: `style` is the layer's layout it reads (one of PROMPT_STYLES); `render(ws, question, *,
    confidence, low_confidence)` and `base_messages(question, *, low_confidence)` replace the layer's layout
    with the backend's own (both or neither); `workspace_kinds` are the candidate kinds it can read (None:
    all); `exemplar_bytes` clips each exemplar's text as the backend was trained (None: whole).

    Answering: `options` are the sampling options the layer asks with (from the backend's settings
    section); `retells_only` says it writes well only by re-telling a retrieved answer (the layer focuses
    each exemplar on the question), and `abstain_when_unsure` makes the layer answer "the corpus has nothing
    on this" instead of calling it when the evidence is weak. `keep_prompt(messages)` reads a prompt ahead
    of any question and keeps its keys and values, so later prompts that start the same way skip that part
    (None: the backend keeps nothing)."""

    unit: str | None = None
    budget: int | None = None
    budget_cap: int | None = None
    measure: Callable[[str], int] | None = None
    count: Callable[[Messages], int] | None = None
    style: str = "full"
    render: Callable[..., Messages] | None = None
    base_messages: Callable[..., Messages] | None = None
    workspace_kinds: tuple[str, ...] | None = None
    exemplar_bytes: int | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    retells_only: bool = False
    abstain_when_unsure: bool = False
    keep_prompt: Callable[[Messages], None] | None = None

    def __post_init__(self) -> None:
        if self.unit is not None and self.unit not in BUDGET_UNITS:
            raise BackendError(f"prompt profile: unit must be one of {', '.join(BUDGET_UNITS)}, got {self.unit!r}")
        if self.style not in PROMPT_STYLES:
            raise BackendError(f"prompt profile: style must be one of {', '.join(PROMPT_STYLES)}, got {self.style!r}")
        if (self.render is None) != (self.base_messages is None):
            raise BackendError("prompt profile: give both render and base_messages (a layout and its fixed part)")
        for name in ("budget", "budget_cap", "exemplar_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BackendError(f"prompt profile: {name} must be at least 1 (None: none), got {value}")


class Backend(Protocol):
    """A generator. ``messages`` are chat messages: dicts with ``role`` (system/user/assistant) and ``content``.

    Backends that decode raw bytes (the BLT) flatten the messages in their own trained format (their
    profile's `render`). Register a new one with `rag.backends.select.register_backend`.
    """

    name: str
    model: str
    profile: PromptProfile

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation: ...

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[Chunk]: ...

    def available(self) -> bool:
        """True when the backend can answer now (server reachable and model present / checkpoint loadable)."""
        ...
