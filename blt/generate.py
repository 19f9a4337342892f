"""Incremental decoding for the BLT and the byte-transformer baseline.

The BLT decoder keeps a KV cache for the entropy model, the local encoder, the global transformer and the
local decoder. Each new byte runs the entropy model, the encoder and the decoder for one position; the global
transformer runs one step only when a patch completes (when the entropy model opens the next one). The
prompt is prefilled in one pass. ``use_cache=False`` recomputes everything over the whole prefix for every
byte (the reference the cache is checked against, and the benchmark's slow path).

Sampling happens in NumPy float64 with a seeded generator, so a seed reproduces a generation exactly.
Reported per-byte probabilities and entropies are those of the next-byte distribution (the model's, mixed
with the exemplar copy distribution when one is asked for; before temperature, top-k/p and repetition
penalty), which is what a confidence estimate needs.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import mlx.core as mx
import numpy as np

from blt.baseline import ByteTransformer
from blt.checkpoint import Checkpoint, cached_checkpoint
from blt.copying import CopyIndex, ExemplarCopier
from blt.entropy import EntropyModel, entropy_from_logits
from blt.errors import GenerationError
from blt.model import BLT
from blt.patching import OnlinePatcher, patch_starts
from blt.streaming import TextStreamer
from blt.tokens import BOS, EOS, OFFSET, PAD, SEP

STOP_REASONS = ("eos", "stop", "length")


# ---- decoders: prompt -> logits, byte -> logits -------------------------------------------------------


class Decoder(Protocol):
    """What ``generate`` drives: next-byte logits [V] after the prompt, then after each appended byte."""

    def prefill(self, tokens: list[int]) -> mx.array: ...

    def step(self, token: int) -> mx.array: ...


class BLTDecoder:
    """Cached (or, with ``use_cache=False``, recomputing) decoding of one sequence with a BLT."""

    def __init__(self, model: BLT, entropy_model: EntropyModel | None = None, use_cache: bool = True):
        self.model, self.cfg, self.use_cache = model, model.cfg, use_cache
        self.patcher_cfg = model.cfg.patcher
        if self.patcher_cfg.needs_entropy and entropy_model is None:
            raise ValueError(f"patcher kind {self.patcher_cfg.kind!r} needs the entropy model")
        self.entropy_model = entropy_model if self.patcher_cfg.needs_entropy else None
        self.tokens: list[int] = []
        self.starts: list[bool] = []  # patch start of every fed token
        self.entropies: list[float] = []  # entropy-model entropy after every fed token (entropy patchers)
        self.patcher = OnlinePatcher(self.patcher_cfg)
        self.cache = model.make_cache()
        self.ent_cache = None if self.entropy_model is None else self.entropy_model.make_cache()
        self.cur_h: mx.array | None = None  # encoder states of the current, unfinished patch [1, n, enc_dim]
        self.cur_slots: list[tuple[mx.array, mx.array]] | None = None  # decoder slots of the previous patch
        self.copy_index = CopyIndex(model.cfg.copy_ngrams) if model.cfg.copy_ngrams else None

    @property
    def n_patches(self) -> int:
        return sum(self.starts)

    def _entropy(self, x: mx.array) -> mx.array | None:
        if self.entropy_model is None:
            return None
        cache = self.ent_cache if self.use_cache else None
        return entropy_from_logits(self.entropy_model(x, cache))[0]

    def prefill(self, tokens: list[int]) -> mx.array:
        if self.tokens:
            raise RuntimeError("prefill() starts a sequence; use step() to continue it")
        if not tokens:
            raise ValueError("the prompt must hold at least one token (e.g. BOS)")
        if not self.use_cache:
            self.tokens = list(tokens)
            return self._recompute()
        model = self.model
        x = mx.array([tokens], dtype=mx.int32)
        H = self._entropy(x)
        ent = [] if H is None else H.tolist()
        for i, t in enumerate(tokens):
            self.starts.append(self.patcher.push(t, ent[i - 1] if ent and i else None))
        self.entropies = ent
        pid_np = np.cumsum(self.starts) - 1
        P = int(pid_np[-1]) + 1
        last_start = int(np.flatnonzero(self.starts)[-1])
        pid = mx.array(pid_np[None].astype(np.int32))
        copy = None
        if self.copy_index is not None:  # the index computes the prompt's copy features once, and keeps them
            copy = mx.array([[self.copy_index.push(t) for t in tokens]], dtype=mx.int32)
        h = model.encode(x, self.cache["encoder"], copy_proposals=copy)
        prev = mx.broadcast_to(model.null_patch, (1, 1, model.cfg.global_dim))
        if P > 1:  # run the global model over the completed patches; the last one may still grow
            pooled = model.pooler(h[:, :last_start], pid[:, :last_start], P - 1)
            g = model.run_global(pooled, self.cache["global"])
            prev = mx.concatenate([prev, g], axis=1)
        slots = model.decoder_slots(prev)
        logits = model.decode(h, slots, pid, self.cache["decoder"])[0, -1]
        self.cur_slots = [(k[:, -1:], v[:, -1:]) for k, v in slots]
        self.cur_h = h[:, last_start:]
        self.tokens = list(tokens)
        mx.eval(logits, self.cur_h, self.cur_slots)
        return logits

    def step(self, token: int) -> mx.array:
        if not self.tokens:
            raise RuntimeError("call prefill() first")
        if not self.use_cache:
            self.tokens.append(token)
            return self._recompute()
        model = self.model
        start = self.patcher.push(token, self.entropies[-1] if self.entropies else None)
        self.starts.append(start)
        if start:  # the previous patch is complete: one global step, new decoder slots
            pooled = model.pooler(self.cur_h, mx.zeros(self.cur_h.shape[:2], dtype=mx.int32), 1)
            g = model.run_global(pooled, self.cache["global"])
            self.cur_slots = model.decoder_slots(g)
            self.cur_h = None
        x = mx.array([[token]], dtype=mx.int32)
        n_ctx = self.cfg.ngram_max - 1
        ctx = mx.array([self.tokens[-n_ctx:]], dtype=mx.int32) if n_ctx else None
        copy = None if self.copy_index is None else mx.array([[self.copy_index.push(token)]], dtype=mx.int32)
        h = model.encode(x, self.cache["encoder"], context=ctx, copy_proposals=copy)
        self.cur_h = h if self.cur_h is None else mx.concatenate([self.cur_h, h], axis=1)
        pid = mx.zeros((1, 1), dtype=mx.int32)
        logits = model.decode(h, self.cur_slots, pid, self.cache["decoder"])[0, -1]
        H = self._entropy(x)
        mx.eval(logits, self.cur_h, *([] if H is None else [H]))
        if H is not None:
            self.entropies.append(H.item())
        self.tokens.append(token)
        return logits

    def _recompute(self) -> mx.array:
        """Logits after the whole prefix, from scratch (the uncached path)."""
        x = mx.array([self.tokens], dtype=mx.int32)
        H = self._entropy(x)
        starts = patch_starts(x, self.patcher_cfg, H)
        logits = self.model(x, starts)[0, -1]
        mx.eval(logits)
        self.starts = np.array(starts)[0].tolist()
        self.entropies = [] if H is None else H.tolist()
        return logits


class BaselineDecoder:
    """Cached (or recomputing) decoding of one sequence with the plain byte transformer."""

    def __init__(self, model: ByteTransformer, use_cache: bool = True):
        self.model, self.use_cache = model, use_cache
        self.cache = model.make_cache() if use_cache else None
        self.tokens: list[int] = []

    def prefill(self, tokens: list[int]) -> mx.array:
        if not tokens:
            raise ValueError("the prompt must hold at least one token (e.g. BOS)")
        self.tokens = list(tokens)
        logits = self.model(mx.array([tokens], dtype=mx.int32), self.cache)[0, -1]
        mx.eval(logits)
        return logits

    def step(self, token: int) -> mx.array:
        self.tokens.append(token)
        x = mx.array([[token]] if self.use_cache else [self.tokens], dtype=mx.int32)
        logits = self.model(x, self.cache)[0, -1]
        mx.eval(logits)
        return logits


def make_decoder(source: Any, entropy_model: EntropyModel | None = None, use_cache: bool = True) -> Decoder:
    """A fresh decoder from a Checkpoint, a checkpoint path, (BLT, EntropyModel), a BLT, a ByteTransformer,
    or anything that already has ``prefill``/``step``."""
    if hasattr(source, "prefill") and hasattr(source, "step"):
        return source
    if isinstance(source, (str, Path)):
        source = cached_checkpoint(source)
    if isinstance(source, Checkpoint):
        source, entropy_model = source.model, source.entropy_model
    elif isinstance(source, tuple):
        source, entropy_model = source
    if isinstance(source, BLT):
        return BLTDecoder(source, entropy_model, use_cache)
    if isinstance(source, ByteTransformer):
        return BaselineDecoder(source, use_cache)
    raise TypeError(f"cannot decode with a {type(source).__name__}")


# ---- sampling ---------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def sample_next(
    logits: np.ndarray,
    rng: np.random.Generator,
    *,
    recent: Sequence[int] = (),
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repeat_penalty: float = 1.0,
    ignore_eos: bool = False,
    banned: Collection[int] = (),
) -> tuple[int, float, float]:
    """Pick the next token; returns (token, model probability of it, model entropy in nats).

    PAD, BOS and SEP are never generated (nor EOS with ``ignore_eos``), nor the ``banned`` tokens. The
    repetition penalty (CTRL style: positive logits divided, negative multiplied) applies to the ``recent``
    tokens; temperature 0 is greedy.
    """
    logits = np.asarray(logits, dtype=np.float64).copy()
    logits[[PAD, BOS, SEP, EOS] if ignore_eos else [PAD, BOS, SEP]] = -np.inf
    p = _softmax(logits)
    nz = p > 0
    entropy = float(-(p[nz] * np.log(p[nz])).sum())
    adj = logits.copy()
    if repeat_penalty != 1.0 and len(recent):
        idx = np.unique(np.asarray(recent, dtype=np.int64))
        vals = adj[idx]
        adj[idx] = np.where(vals > 0, vals / repeat_penalty, vals * repeat_penalty)
    if len(banned):
        adj[list(banned)] = -np.inf
    if temperature <= 0:
        token = int(np.argmax(adj))
    else:
        adj = adj / temperature
        if top_k is not None and 0 < top_k < adj.size:
            kth = np.partition(adj, -top_k)[-top_k]
            adj = np.where(adj < kth, -np.inf, adj)
        q = _softmax(adj)
        if top_p is not None and 0 < top_p < 1:
            order = np.argsort(-q, kind="stable")
            cum = np.cumsum(q[order])
            cut = int(np.searchsorted(cum, top_p)) + 1  # smallest prefix with mass >= top_p
            keep = np.zeros_like(q, dtype=bool)
            keep[order[:cut]] = True
            q = np.where(keep, q, 0.0)
            q = q / q.sum()
        token = int(rng.choice(q.size, p=q))
    return token, float(p[token]), entropy


class NgramFollowers:
    """For no-repeat-n-gram decoding: which tokens have followed each (n-1)-token context of the output."""

    def __init__(self, n: int):
        self.n = n
        self.follow: dict[tuple[int, ...], set[int]] = {}

    def add(self, tokens: Sequence[int]) -> None:
        """Record the n-gram that the last token of ``tokens`` completed."""
        if self.n > 0 and len(tokens) >= self.n:
            self.follow.setdefault(tuple(tokens[-self.n : -1]), set()).add(tokens[-1])

    def banned(self, tokens: Sequence[int]) -> set[int]:
        """Tokens that would repeat an n-gram of ``tokens`` if they came next."""
        if self.n <= 0 or len(tokens) < self.n - 1:
            return set()
        return self.follow.get(tuple(tokens[len(tokens) - self.n + 1 :]), set())


# ---- the generation loop -----------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """A finished generation. ``bytes`` are the emitted bytes (no EOS, no stop sequence); ``probs`` and
    ``entropies`` are aligned with them. ``text`` is their UTF-8 decoding (invalid sequences as U+FFFD, a
    trailing incomplete character dropped)."""

    text: str
    bytes: bytes
    probs: list[float]
    entropies: list[float]
    stop_reason: str  # "eos", "stop" or "length"
    tokens: list[int] = field(default_factory=list)  # every generated id, EOS and stop bytes included
    prompt_tokens: int = 0
    n_patches: int | None = None  # BLT: patches over the prompt and the fed output
    timings: dict[str, float] = field(default_factory=dict)  # seconds, and bytes_per_s


@dataclass
class StepOutput:
    """One generated token. ``text`` is what became safe to show with it (often '' mid-character); the last
    step has ``done=True``, its ``stop_reason`` and the whole ``result``."""

    token: int
    prob: float
    entropy: float
    text: str
    done: bool = False
    stop_reason: str | None = None
    result: GenerationResult | None = None


def generate(
    source: Any,
    prompt_tokens: Sequence[int],
    *,
    max_bytes: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
    no_repeat_ngram: int = 0,
    stop: Sequence[bytes | str] | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    entropy_model: EntropyModel | None = None,
    ignore_eos: bool = False,
    copy_sources: Sequence[Sequence[int]] = (),
    copy_weight: float = 0.0,
) -> Iterator[StepOutput]:
    """Stream up to ``max_bytes`` generated tokens after ``prompt_tokens`` (BOS is used if it is empty).

    ``source``: a Checkpoint or its path, (BLT, EntropyModel), a BLT (with ``entropy_model``), a
    ByteTransformer, or a Decoder. Stops at EOS, at any ``stop`` sequence (not emitted) or at ``max_bytes``.
    The repetition penalty looks at the last ``repeat_last_n`` tokens of prompt and output;
    ``no_repeat_ngram`` = n > 0 never lets the output hold the same n bytes twice (the prompt is not
    counted, so copying from exemplars stays free); ``ignore_eos`` (for benchmarks) never samples EOS.
    ``copy_sources`` (token ids of retrieved responses, least relevant first, each ending in EOS where the
    response was whole) with ``copy_weight`` > 0 mix a copy distribution into the model's wherever the
    output matches them (blt.copying.ExemplarCopier).
    """
    if max_bytes < 1:
        raise GenerationError(f"max_bytes must be >= 1, got {max_bytes}")
    t0 = time.perf_counter()
    decoder = make_decoder(source, entropy_model, use_cache)
    models = [getattr(decoder, a, None) for a in ("model", "entropy_model")]
    models = [m for m in models if m is not None]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        prompt = list(prompt_tokens) or [BOS]
        rng = np.random.default_rng(seed)
        streamer = TextStreamer(stop)
        logits = decoder.prefill(prompt)
        t_prefill = time.perf_counter()
        history = list(prompt)
        tokens: list[int] = []
        probs: list[float] = []
        ents: list[float] = []
        pieces: list[str] = []
        t_first = None
        seen = NgramFollowers(no_repeat_ngram)
        copier = None
        if copy_weight > 0 and copy_sources:
            copier = ExemplarCopier(copy_sources, copy_weight)
        for i in range(max_bytes):
            step_logits = np.array(logits)
            token, prob, ent = sample_next(
                step_logits if copier is None else copier.mix(step_logits),
                rng,
                recent=history[-repeat_last_n:] if repeat_last_n > 0 else (),
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                repeat_penalty=repeat_penalty,
                ignore_eos=ignore_eos,
                banned=seen.banned(tokens),
            )
            t_first = t_first or time.perf_counter()
            tokens.append(token)
            seen.add(tokens)
            if copier is not None:
                copier.push(token)
            history.append(token)
            if token == EOS:
                text, reason = streamer.flush(), "eos"
            else:
                probs.append(prob)
                ents.append(ent)
                text, stopped = streamer.push(token - OFFSET)
                reason = "stop" if stopped else ("length" if i == max_bytes - 1 else None)
                if reason == "length":
                    text += streamer.flush()
            pieces.append(text)
            if reason is None:
                yield StepOutput(token, prob, ent, text)
                logits = decoder.step(token)
                continue
            t_end = time.perf_counter()
            n_out = len(streamer.released)
            result = GenerationResult(
                text="".join(pieces),
                bytes=bytes(streamer.released),
                probs=probs[:n_out],
                entropies=ents[:n_out],
                stop_reason=reason,
                tokens=tokens,
                prompt_tokens=len(prompt),
                n_patches=getattr(decoder, "n_patches", None),
                timings={
                    "prefill_s": t_prefill - t0,
                    "first_byte_s": t_first - t0,
                    "decode_s": t_end - t_prefill,
                    "total_s": t_end - t0,
                    "bytes_per_s": len(tokens) / max(t_end - t_prefill, 1e-9),
                },
            )
            yield StepOutput(token, prob, ent, text, True, reason, result)
            return
    finally:
        for m, w in zip(models, was_training, strict=True):
            m.train(w)


def generate_text(source: Any, prompt_tokens: Sequence[int], **kwargs: Any) -> GenerationResult:
    """Run ``generate`` to the end and return the GenerationResult (same keyword arguments)."""
    for out in generate(source, prompt_tokens, **kwargs):
        if out.done and out.result is not None:
            return out.result
    raise RuntimeError("generation ended without a final step")  # unreachable


def stream_text(source: Any, prompt_tokens: Sequence[int], **kwargs: Any) -> Iterator[str]:
    """Only the non-empty text pieces of ``generate`` (each is whole UTF-8 characters)."""
    for out in generate(source, prompt_tokens, **kwargs):
        if out.text:
            yield out.text
