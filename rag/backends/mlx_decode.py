"""Fast decoding for an mlx-lm model: a preallocated KV cache and one compiled fixed-shape step per cache size.

About half of a small model's decoding step on a CPU is per-op overhead, and mlx-lm's growing KV cache
changes shapes every token, so nothing can be compiled. Here the cache is allocated once (rounded up to
CACHE_STEP positions) and written in place with `slice_update` at an offset held in an array; attention reads
only the first `span` positions (the filled ones rounded up to ATTEND_STEP) and masks the rest, so a long cache
costs nothing until it fills. The whole step (model, log-softmax) is one `mx.compile`d graph per span, and the
next step is queued (`mx.async_eval`) before the current token is read back. Batches are left-padded: every row shares
the offset, padding is masked, and RoPE only sees relative positions, so a row's answer does not depend on
its padding. mlx-lm supplies the model, the cache protocol, the samplers and the logits processors
(e.g. its repetition penalty).
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
    """Decodes batches of token prompts with one mlx-lm model (compiled steps are kept per cache shape)."""

    def __init__(self, model):
        self.model = model
        self._step = mx.compile(self._forward)
        self.prompt_cache = None  # a PromptCache (rag.backends.prompt_cache): batch-1 prefill goes through it

    def _forward(self, tokens, keys, values, offset, left_pad, span):
        size = keys[0].shape[2]
        caches = [StaticKVCache(size, offset, left_pad, k, v, span) for k, v in zip(keys, values, strict=True)]
        logits = self.model(tokens, cache=caches)[:, -1, :].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return logprobs, [c.keys for c in caches], [c.values for c in caches]

    def prefill(self, prompts: Sequence[Sequence[int]], size: int, pad: int = 0):
        """Fill a new cache with left-padded ``prompts``: (next-token log-probs [B, V], caches, left padding)."""
        if self.prompt_cache is not None and len(prompts) == 1:
            return self.prompt_cache.prefill(self.model, prompts[0], size)
        length = max(len(p) for p in prompts)
        left_pad = mx.array([length - len(p) for p in prompts], dtype=mx.int32)
        tokens = mx.array([[pad] * (length - len(p)) + list(p) for p in prompts], dtype=mx.int32)
        caches = [StaticKVCache(size, mx.array(0, dtype=mx.int32), left_pad) for _ in self.model.layers]
        for start in range(0, length, PREFILL_STEP):
            end = min(length, start + PREFILL_STEP)
            for c in caches:
                c.span = attend_span(end, size)
            logits = forward_last(self.model, tokens[:, start:end], caches, last=end == length)
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
        copiers: Sequence[ExemplarCopier] | None = None,
        logits_processors: Sequence[LogitsProcessor] | None = None,
    ) -> Iterator[list[Step | None]]:
        """Per decoding step, one Step for each row still going (None once a row has ended at end-of-turn).

        ``sampler`` and ``logits_processors`` follow mlx-lm's interfaces (mlx_lm.sample_utils); a processor sees
        one row's tokens so far (prompt and answer) and its log-probabilities, which are renormalised after.
        ``copiers`` (one per row) mix retrieved text into each row's distribution; the caller may stop early
        by closing the generator."""
        length = max(len(p) for p in prompts)
        size = -(-(length + max_tokens) // CACHE_STEP) * CACHE_STEP
        logprobs, caches, left_pad = self.prefill(prompts, size)
        keys, values = [c.keys for c in caches], [c.values for c in caches]
        offset = mx.array(length, dtype=mx.int32)
        B = len(prompts)
        processors = list(logits_processors or [])
        history = [mx.array(list(p), dtype=mx.int32) for p in prompts] if processors else []

        def choose(lp: mx.array):
            if processors:
                rows = [lp[i : i + 1] for i in range(B)]
                for process in processors:
                    rows = [process(h, r) for h, r in zip(history, rows, strict=True)]
                lp = rows[0] if B == 1 else mx.concatenate(rows, axis=0)
                lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
            if copiers:
                rows = np.array(lp)
                mixed = [c.mix(r) if c is not None else r for c, r in zip(copiers, rows, strict=True)]
                lp = mx.array(np.stack(mixed).astype(np.float32))
            y = sampler(lp).astype(mx.int32)
            prob = mx.exp(mx.take_along_axis(lp, y[:, None], axis=-1))[:, 0]
            entropy = -mx.sum(mx.where(lp > -mx.inf, mx.exp(lp) * lp, 0.0), axis=-1)
            return y, prob, entropy

        y, prob, entropy = choose(logprobs)
        done = [False] * B
        for n in range(max_tokens):
            if processors:
                history = [mx.concatenate([h, y[i : i + 1]]) for i, h in enumerate(history)]
            last = n == max_tokens - 1
            if not last:  # queue the next step before reading this one back
                span = attend_span(length + n + 1, size)
                logprobs, keys, values = self._step(y[:, None], keys, values, offset, left_pad, span)
                offset = offset + 1
                if not copiers:
                    nxt = choose(logprobs)
                    mx.async_eval(nxt)
            mx.eval(y, prob, entropy)
            tokens, probs, ents = y.tolist(), prob.tolist(), entropy.tolist()
            out: list[Step | None] = []
            for i in range(B):
                if done[i]:
                    out.append(None)
                    continue
                if tokens[i] in eos_ids:
                    done[i] = True
                    out.append(None)
                    continue
                out.append(Step(tokens[i], probs[i], ents[i]))
                if copiers and copiers[i] is not None:
                    copiers[i].push(tokens[i])
            yield out
            if all(done):
                return
            if not last:
                y, prob, entropy = nxt if not copiers else choose(logprobs)


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
