"""Fast decoding for an mlx-lm model at batch 1: a preallocated KV cache and one compiled fixed-shape step per
cache size.

About half of a small model's decoding step on a CPU is per-op overhead, and mlx-lm's growing KV cache
changes shapes every token, so nothing can be compiled. Here the cache is allocated once (rounded up to
CACHE_STEP positions) and written in place with `slice_update` at an offset held in an array; attention reads
only the first `span` positions (the filled ones rounded up to ATTEND_STEP) and masks the rest, so a long cache
costs nothing until it fills. The whole step (model, log-softmax) is one `mx.compile`d graph per span, and the
next step is queued (`mx.async_eval`) before the current token is read back. mlx-lm supplies the model, the
cache protocol, the samplers and the logits processors (its repetition penalty; `copy_processor` mixes
retrieved text in through the same interface).

One conversation at a time: the assistant's path (`MLXBackend.stream`), where this wins after a long prompt
(bench/RESULTS.md). Batches go through mlx-lm's own batch generator (`MLXBackend.generate_batch`), which is as
fast at batch 16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from blt.copying import ExemplarCopier

# mlx-lm's logits-processor interface: (tokens so far [n], logits [1, V]) -> logits [1, V]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]

CACHE_STEP = 256  # cache sizes are multiples of this, so a handful of compiled shapes serve every request
ATTEND_STEP = 128  # attention spans are multiples of this: one compile (~0.1 s) per span, once per process
PREFILL_STEP = 512  # prompt tokens per forward pass while filling the cache


class StaticKVCache:
    """mlx-lm's cache protocol (what its attention reads: ``offset``, ``update_and_fetch``, ``make_mask``,
    ``state``) over buffers of a fixed size: [B, kv heads, size, head dim] keys and values.

    Attention sees the first ``span`` positions, which must cover every position written so far."""

    def __init__(self, size: int, offset: mx.array, left_pad: mx.array, keys=None, values=None, span: int = 0):
        self.size, self.offset, self.left_pad = size, offset, left_pad
        self.keys, self.values = keys, values
        self.span = span or size

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None:
            B, H, _, D = keys.shape
            self.keys = mx.zeros((B, H, self.size, D), keys.dtype)
            self.values = mx.zeros((B, H, self.size, values.shape[3]), values.dtype)
        start = self.offset.reshape(1)
        self.keys = mx.slice_update(self.keys, keys, start, axes=(2,))
        self.values = mx.slice_update(self.values, values, start, axes=(2,))
        self.offset = self.offset + keys.shape[2]
        return self.keys[:, :, : self.span], self.values[:, :, : self.span]

    def make_mask(self, n: int, **_: object) -> mx.array:
        """[B, 1, n, span]: a query sees its own row's earlier positions, not padding, not the empty tail."""
        cols = mx.arange(self.span)
        rows = self.offset + mx.arange(n)
        causal = cols[None, :] <= rows[:, None]
        real = cols[None, :] >= self.left_pad[:, None]
        return causal[None, None] & real[:, None, None, :]

    def empty(self) -> bool:
        return self.keys is None

    @property
    def state(self):
        return self.keys, self.values


def attend_span(filled: int, size: int) -> int:
    """Cache positions attention reads once ``filled`` are written: rounded up to ATTEND_STEP, at most ``size``."""
    return min(size, -(-filled // ATTEND_STEP) * ATTEND_STEP)


@dataclass
class Step:
    """One emitted token of one row, with its probability and the entropy (nats) of the distribution."""

    token: int
    prob: float
    entropy: float


class Decoder:
    """Decodes one token prompt at a time with one mlx-lm model (compiled steps are kept per cache shape)."""

    def __init__(self, model):
        self.model = model
        self._step = mx.compile(self._forward)
        self.prompt_cache = None  # a PromptCache (rag.backends.prompt_cache): prefill goes through it when set

    def _forward(self, tokens, keys, values, offset, left_pad, span):
        size = keys[0].shape[2]
        caches = [StaticKVCache(size, offset, left_pad, k, v, span) for k, v in zip(keys, values, strict=True)]
        logits = self.model(tokens, cache=caches)[:, -1, :].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return logprobs, [c.keys for c in caches], [c.values for c in caches]

    def prefill(self, prompts: Sequence[Sequence[int]], size: int):
        """Fill a new cache of ``size`` positions with the one prompt in ``prompts``: (next-token log-probs
        [1, V], caches, left padding [1] (none))."""
        prompt = _one(prompts)
        if self.prompt_cache is not None:
            return self.prompt_cache.prefill(self.model, prompt, size)
        left_pad = mx.array([0], dtype=mx.int32)
        tokens = mx.array([list(prompt)], dtype=mx.int32)
        caches = [StaticKVCache(size, mx.array(0, dtype=mx.int32), left_pad) for _ in self.model.layers]
        for start in range(0, len(prompt), PREFILL_STEP):
            end = min(len(prompt), start + PREFILL_STEP)
            for c in caches:
                c.span = attend_span(end, size)
            logits = forward_last(self.model, tokens[:, start:end], caches, last=end == len(prompt))
            mx.eval(logits if logits is not None else [], [c.state for c in caches])
        assert logits is not None  # the last chunk always computes them
        logits = logits[:, -1, :].astype(mx.float32)
        return logits - mx.logsumexp(logits, axis=-1, keepdims=True), caches, left_pad

    def decode(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_tokens: int,
        sampler: Callable[[mx.array], mx.array],
        eos_ids: set[int],
        logits_processors: Sequence[LogitsProcessor] | None = None,
    ) -> Iterator[list[Step | None]]:
        """For the one prompt in ``prompts``, per decoding step a one-item list: its Step, or None once it has
        ended at end-of-turn (the last item).

        ``sampler`` and ``logits_processors`` follow mlx-lm's interfaces (mlx_lm.sample_utils): a processor sees
        the tokens so far (prompt and answer) and the log-probabilities (where mlx-lm hands it raw logits: see
        `log_softmax_processor`), which are renormalised after. The caller may stop early by closing the
        generator."""
        prompt = _one(prompts)
        length = len(prompt)
        size = -(-(length + max_tokens) // CACHE_STEP) * CACHE_STEP
        logprobs, caches, left_pad = self.prefill([prompt], size)
        keys, values = [c.keys for c in caches], [c.values for c in caches]
        offset = mx.array(length, dtype=mx.int32)
        processors = list(logits_processors or [])
        history = mx.array(list(prompt), dtype=mx.int32)

        def choose(lp: mx.array):
            for process in processors:
                lp = process(history, lp)
            if processors:
                lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
            y = sampler(lp).astype(mx.int32)
            return (y, *token_stats(lp, y))

        y, prob, entropy = choose(logprobs)
        for n in range(max_tokens):
            if processors:
                history = mx.concatenate([history, y])
            last = n == max_tokens - 1
            if not last:  # queue the next step before reading this one back
                span = attend_span(length + n + 1, size)
                logprobs, keys, values = self._step(y[:, None], keys, values, offset, left_pad, span)
                offset = offset + 1
                nxt = choose(logprobs)
                mx.async_eval(nxt)
            mx.eval(y, prob, entropy)
            token = y.item()
            if token in eos_ids:
                yield [None]
                return
            yield [Step(token, prob.item(), entropy.item())]
            if not last:
                y, prob, entropy = nxt


def token_stats(logprobs: mx.array, tokens: mx.array) -> tuple[mx.array, mx.array]:
    """(probability of each row's token [B], entropy in nats of each row's distribution [B]) for log-probabilities
    [B, V] and tokens [B]."""
    prob = mx.exp(mx.take_along_axis(logprobs, tokens[:, None], axis=-1))[:, 0]
    entropy = -mx.sum(mx.where(logprobs > -mx.inf, mx.exp(logprobs) * logprobs, 0.0), axis=-1)
    return prob, entropy


def log_softmax_processor(tokens: mx.array, logits: mx.array) -> mx.array:
    """A first logits processor for mlx-lm's generators, which hand processors raw logits: the processors after it
    see log-probabilities, as the Decoder's do (a repetition penalty scales them, so the two differ)."""
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def _one(prompts: Sequence[Sequence[int]]) -> Sequence[int]:
    if len(prompts) != 1:
        raise ValueError(f"the compiled decoder takes one prompt at a time, got {len(prompts)}: batch with mlx-lm")
    return prompts[0]


def copy_processor(copier: ExemplarCopier, prompt_length: int) -> LogitsProcessor:
    """An mlx-lm logits processor that mixes ``copier``'s copy distribution into one row's: it first pushes the
    answer tokens it has not seen (those after ``prompt_length`` in the row's tokens so far), then returns the
    mixture's log-probabilities [1, V]. Stateful: one per row and per generation."""
    seen = prompt_length

    def process(tokens: mx.array, logits: mx.array) -> mx.array:
        nonlocal seen
        if tokens.size > seen:
            for t in tokens[seen:].tolist():
                copier.push(t)
            seen = tokens.size
        lp = np.array(logits[0] - mx.logsumexp(logits[0]))
        return mx.array(copier.mix(lp).astype(np.float32))[None]

    return process


LAST_ONLY_TYPES = ("llama",)  # mlx-lm model types whose logits are lm_head(model.model(x)) and nothing more


def forward_last(model: Any, tokens: mx.array, caches: list[StaticKVCache], last: bool) -> mx.array | None:
    """Run `tokens` through `model` into `caches`: the logits of the last position when `last`, else None.
    For a plain llama-family model only the positions needed are projected onto the vocabulary."""
    inner = getattr(model, "model", None)
    args = getattr(model, "args", None)
    if inner is None or args is None or getattr(model, "model_type", None) not in LAST_ONLY_TYPES:
        return model(tokens, cache=caches)[:, -1:, :]
    h = inner(tokens, cache=caches)
    if not last:
        return None
    h = h[:, -1:, :]
    return inner.embed_tokens.as_linear(h) if args.tie_word_embeddings else model.lm_head(h)
