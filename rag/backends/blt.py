"""The BLT backend: our byte model, conditioned on retrieved exemplars in the byte layout it was trained on.

The prompt is `BOS [exemplars, least relevant first] SEP question SEP` (see `blt.data`); only exemplars
compete for the workspace, since the model never saw self-model text or memories in training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blt.checkpoint import DEFAULT_CHECKPOINT, Checkpoint, cached_checkpoint
from blt.data import EVAL_FORMAT, exemplar_block, exemplar_responses, trim_block
from blt.errors import CheckpointError
from blt.generate import generate
from blt.tokens import BOS, EOS, SEP, encode
from rag.backends.base import BackendError, Chunk, Generation, GenerationOptions, PromptProfile
from rag.backends.options import options_for

OVERHEAD = 3  # BOS, SEP, SEP
DEFAULT_ANSWER_BYTES = 384  # for a checkpoint that does not record the length of its training responses


class BLTBackend:
    """Generates with a BLT (or baseline) checkpoint; `budget_bytes` caps the workspace to its context.

    Answers are up to `max_bytes` long (0: as long as the checkpoint's training responses); `copy_weight`
    mixes a copy of the retrieved answers into the model's next-byte distribution where the answer matches
    them (blt.copying.ExemplarCopier; 0 leaves the model alone). It writes well only where it can re-tell a
    retrieved answer, so with `abstain` ([blt] abstain) the layer says the corpus has nothing on a question
    whose evidence is weak instead of calling it."""

    name = "blt"
    workspace_kinds = ("exemplar",)  # the model never saw self-model text or memories in training

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        max_bytes: int = 0,
        defaults: GenerationOptions | None = None,
        no_repeat_ngram: int = 0,
        copy_weight: float = 0.0,
        abstain: bool = True,
    ):
        if not 0.0 <= copy_weight <= 1.0:
            raise BackendError(f"[blt] copy_weight must be between 0 and 1 (0 turns copying off), got {copy_weight}")
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        if not path.exists():
            hint = " (the shipped default is missing: run `make checkpoint`)" if not checkpoint else ""
            raise BackendError(f"no BLT checkpoint at {path}{hint}")
        self.path = path
        self.model = "default" if path == DEFAULT_CHECKPOINT else str(path)
        trained = (self.ckpt.metrics.get("train_config") or {}).get("data") or {}
        self.exemplar_bytes: int | None = trained.get("exemplar_bytes")
        self.max_bytes = max_bytes or int(trained.get("response_bytes") or DEFAULT_ANSWER_BYTES)
        self.no_repeat_ngram = no_repeat_ngram
        self.copy_weight = copy_weight
        self.defaults = defaults or GenerationOptions()
        self.context_bytes = int(self.ckpt.config.max_bytes)
        self.budget_bytes = max(64, self.context_bytes - self.max_bytes - OVERHEAD)
        self.profile = PromptProfile(
            unit="bytes",
            budget_cap=self.budget_bytes,
            render=self.render,
            base_messages=self.base_messages,
            workspace_kinds=self.workspace_kinds,
            exemplar_bytes=self.exemplar_bytes or None,
            options=self.defaults,
            retells_only=True,
            abstain_when_unsure=abstain,
        )

    @property
    def ckpt(self) -> Checkpoint:
        """The checkpoint as it is on disk now (blt.checkpoint.cached_checkpoint reloads a rewritten one)."""
        try:
            return cached_checkpoint(self.path)
        except CheckpointError as e:
            raise BackendError(f"cannot load the BLT checkpoint: {e}") from None

    # -- the prompt, in the trained layout ------------------------------------------------------------

    def render(self, ws: Any, question: str, **_: Any) -> list[dict[str, str]]:
        """Exemplar winners as one `Q: ..\nA: ..` block (most salient last, next to the question), each
        response clipped as in training."""
        winners = [c for c in (ws.winners if ws is not None else []) if c.kind == "exemplar"]
        winners.sort(key=lambda c: c.salience, reverse=True)
        pairs = [(c.meta["hit"].prompt, c.meta["hit"].response) for c in winners if "hit" in c.meta]
        block = exemplar_block(pairs, EVAL_FORMAT, self.exemplar_bytes).decode("utf-8") if pairs else ""
        return [{"role": "system", "content": block}, {"role": "user", "content": question}]

    def base_messages(self, question: str, **_: Any) -> list[dict[str, str]]:
        return [{"role": "user", "content": question}]

    def tokens(self, messages: list[dict[str, str]], reserve: int) -> list[int]:
        """`BOS block SEP question SEP`, the exemplar block cut from the left to leave `reserve` bytes."""
        block = "".join(m["content"] for m in messages if m["role"] == "system").encode("utf-8")
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "").encode("utf-8")
        room = self.context_bytes - reserve - OVERHEAD - len(question)
        if room < 0:
            raise BackendError(
                f"the question ({len(question)} bytes) does not fit the BLT's {self.context_bytes}-byte context "
                f"with {reserve} bytes left to answer: shorten it or lower [blt] max_bytes"
            )
        block = trim_block(block, room)
        return [BOS, *encode(block), SEP, *encode(question), SEP]

    def copy_sources(self, messages: list[dict[str, str]]) -> list[list[int]]:
        """The exemplar responses as token ids for copying; one that was not clipped ends in EOS, so a copied
        answer ends where the retrieved one does."""
        block = "".join(m["content"] for m in messages if m["role"] == "system")
        out = []
        for r in exemplar_responses(block, EVAL_FORMAT):
            data = r.encode("utf-8")
            whole = self.exemplar_bytes is None or len(data) < self.exemplar_bytes - 3  # clip_text: <= 3 short
            out.append(encode(data) + ([EOS] if whole else []))
        return out

    # -- decoding --------------------------------------------------------------------------------------

    def _kwargs(self, options: GenerationOptions | None) -> dict[str, Any]:
        options = options or GenerationOptions()

        def pick(name: str) -> Any:
            value = getattr(options, name)
            return getattr(self.defaults, name) if value is None else value

        max_bytes = pick("max_tokens") or self.max_bytes
        copy_weight = pick("copy_weight")
        return {
            "max_bytes": int(max_bytes),
            "temperature": float(pick("temperature") or 0.0),
            "top_k": pick("top_k") or None,
            "top_p": pick("top_p"),
            "repeat_penalty": float(pick("repeat_penalty") or 1.0),
            "stop": pick("stop") or None,
            "seed": pick("seed"),
            "no_repeat_ngram": self.no_repeat_ngram,
            "copy_weight": self.copy_weight if copy_weight is None else float(copy_weight),
        }

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[Chunk]:
        kwargs = self._kwargs(options)
        prompt = self.tokens(messages, kwargs["max_bytes"])
        kwargs["copy_sources"] = self.copy_sources(messages) if kwargs["copy_weight"] > 0 else []
        started = time.perf_counter()
        for step in generate(self.ckpt, prompt, **kwargs):
            if step.text:
                yield Chunk(step.text)
            if step.done and step.result is not None:
                r = step.result
                gen = Generation(
                    text=r.text,
                    model=self.model,
                    backend=self.name,
                    done_reason="length" if r.stop_reason == "length" else "stop",
                    probs=r.probs,
                    entropies=r.entropies,
                    timings={
                        "generate": (time.perf_counter() - started) * 1000,
                        "first_byte": r.timings.get("first_byte_s", 0.0) * 1000,
                        "bytes_per_s": r.timings.get("bytes_per_s", 0.0),
                    },
                )
                yield Chunk("", done=True, generation=gen)

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation:
        for chunk in self.stream(messages, options):
            if chunk.done and chunk.generation is not None:
                return chunk.generation
        raise BackendError("the BLT produced no result")  # unreachable: generate always ends with done

    def available(self) -> bool:
        return True


def load_backend(settings: Any, model: str | None = None) -> BLTBackend:
    """The BLT backend from `[blt]` settings; `model` (e.g. `ask --model PATH`) names another checkpoint."""
    b = settings.blt
    return BLTBackend(
        model or b.checkpoint or None,
        max_bytes=b.max_bytes,
        defaults=options_for(settings, "blt"),
        no_repeat_ngram=b.no_repeat_ngram,
        copy_weight=b.copy_weight,
        abstain=b.abstain,
    )
