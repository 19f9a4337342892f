"""Keys and values of recent prompts, so a prompt that starts as an earlier one did skips that part's prefill.

Every prompt a model reads through the chat template starts with the same system prompt and template head,
and prompts built on the same retrieved passage share everything up to the question. The attention keys and
values of a token depend only on the tokens before it, so they can be copied from an earlier prompt instead of
computed again: `PromptCache.prefill` looks for the stored prompt with the longest common prefix, copies its
keys and values into a new `StaticKVCache` and runs the model over the rest only (at least the last token,
whose logits start the answer). Each prompt it reads is stored (a copy of its keys and values) under a memory
budget, least recently used first out, as Ollama's runner keeps its slots' caches.

The prefill here also skips what the answer never reads: the vocabulary projection of every position but the
last (a quarter of a short prompt's work for SmolLM2), and attention over cache positions not written yet (the
span grows with each chunk). One prompt at a time: batches go through mlx-lm's BatchGenerator
(`MLXBackend.generate_batch`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from rag.backends.cpu_kernels import numpy_kernels
from rag.backends.mlx_decode import StaticKVCache, forward_last

MAX_BYTES = 128 << 20  # keys and values kept at most (SmolLM2-135M: 46 KB a token, ~2,900 tokens)
CHUNK = 512  # prompt tokens per forward pass: each chunk attends only to the positions filled so far


@dataclass
class Entry:
    """One stored prompt: its tokens and each layer's keys and values [1, kv heads, len(tokens), head dim]."""

    tokens: tuple[int, ...]
    keys: list[mx.array]
    values: list[mx.array]
    nbytes: int


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptCache:
    """Recent prompts' keys and values for one model, by token prefix; safe to share between threads."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: list[Entry] = []  # most recently used first
        self._lock = threading.Lock()
        self.hits = 0  # prompt tokens whose keys and values were copied instead of computed
        self.computed = 0  # prompt tokens run through the model

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held now."""
        return sum(e.nbytes for e in self._entries)

    def lookup(self, prompt: Sequence[int]) -> tuple[int, Entry | None]:
        """(tokens reusable, the entry holding them) for `prompt`: never all of it (the last token's logits are
        needed), 0 and None when nothing stored starts like it."""
        best, found = 0, None
        with self._lock:
            for e in self._entries:
                n = common_prefix(e.tokens, prompt)
                if n > best:
                    best, found = n, e
            if found is not None:
                self._entries.remove(found)
                self._entries.insert(0, found)
        return min(best, len(prompt) - 1), found

    def store(self, prompt: Sequence[int], caches: Sequence[StaticKVCache]) -> None:
        """Keep a copy of the first len(prompt) positions of `caches` (filled by `prompt`), within the budget."""
        n = len(prompt)
        if self.held(prompt) is not None:
            return  # an entry already holds all of it
        keys = [c.keys[:, :, :n] * 1 for c in caches]  # copies: a view would keep the whole buffer from reuse
        values = [c.values[:, :, :n] * 1 for c in caches]
        mx.eval(keys, values)
        self.add(prompt, keys, values)

    def add(self, tokens: Sequence[int], keys: list[mx.array], values: list[mx.array]) -> None:
        """Keep the keys and values of the prompt `tokens` (computed here, or read from disk by
        rag.backends.head_cache), within the budget."""
        nbytes = sum(k.nbytes + v.nbytes for k, v in zip(keys, values, strict=True))
        if nbytes > self.max_bytes:
            return
        tokens = tuple(tokens)
        with self._lock:
            # an entry this prompt extends is superseded by it
            self._entries = [e for e in self._entries if tokens[: len(e.tokens)] != e.tokens]
            self._entries.insert(0, Entry(tokens, keys, values, nbytes))
            while self.nbytes > self.max_bytes:
                self._entries.pop()

    def held(self, tokens: Sequence[int]) -> Entry | None:
        """The stored entry that starts with all of `tokens`, if any."""
        n, want = len(tokens), tuple(tokens)
        with self._lock:
            return next((e for e in self._entries if e.tokens[:n] == want), None)

    def clear(self) -> None:
        """Drop every stored prompt."""
        with self._lock:
            self._entries.clear()

    def prefill(self, model: Any, prompt: Sequence[int], size: int) -> tuple[mx.array, list[StaticKVCache], mx.array]:
        """`Decoder.prefill` for one prompt: (next-token log-probs [1, V], caches of `size` positions, left padding),
        reusing the longest stored prefix and storing this prompt."""
        reuse, entry = self.lookup(prompt)
        left_pad = mx.array([0], dtype=mx.int32)
        caches = [StaticKVCache(size, mx.array(0, dtype=mx.int32), left_pad) for _ in model.layers]
        if entry is not None and reuse > 0:
            for c, k, v in zip(caches, entry.keys, entry.values, strict=True):
                c.update_and_fetch(k[:, :, :reuse], v[:, :, :reuse])
        tokens = mx.array([list(prompt)], dtype=mx.int32)
        logits = None
        with numpy_kernels():  # eager, so a CPU's exps can go to NumPy (rag.backends.cpu_kernels)
            for start in range(reuse, len(prompt), CHUNK):
                end = min(len(prompt), start + CHUNK)
                for c in caches:
                    c.span = end  # eager: no compiled shape to keep, so attention reads exactly what is filled
                logits = forward_last(model, tokens[:, start:end], caches, last=end == len(prompt))
                mx.eval(logits if logits is not None else [], [c.state for c in caches])
        with self._lock:
            self.hits += reuse
            self.computed += len(prompt) - reuse
        self.store(prompt, caches)
        assert logits is not None  # the last chunk always computes them
        logits = logits[:, -1, :].astype(mx.float32)
        return logits - mx.logsumexp(logits, axis=-1, keepdims=True), caches, left_pad
