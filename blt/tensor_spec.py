"""The tensors a model config implies (names and shapes, computed without building the model), and the check
of a safetensors header against them.

A checkpoint's config.json is not trusted: before any array is allocated, its config is compared with the
weights file's header (the 8-byte length and the JSON that follows; no tensor data is read). A config that
asks for a billion layers, a wrong width or a tensor the file lacks is refused at once, naming the field.
`tests/test_blt_model.py` checks that the spec equals the parameters of the real modules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from blt.config import BaselineConfig, BLTConfig, EntropyConfig
from blt.errors import CheckpointError
from blt.tokens import VOCAB_SIZE

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit on the JSON header
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")

Shape = tuple[int, ...]
Spec = dict[str, tuple[Shape, tuple[str, ...]]]  # tensor name -> (shape, the config fields that decide it)
ModelConfig = BLTConfig | BaselineConfig | EntropyConfig


def layer_lists(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(tensor name prefix, config field) of each stack of repeated layers."""
    if isinstance(cfg, BLTConfig):
        return [("encoder", "enc_layers"), ("global_layers", "global_layers"), ("decoder", "dec_layers")]
    return [("layers", "n_layers")]


def _block(spec: Spec, prefix: str, dim: int, mlp_mult: int, fields: tuple[str, ...]) -> None:
    """A pre-norm transformer block (blt.layers.Block)."""
    hidden = mlp_mult * dim
    for name, shape in (
        ("attn_norm.weight", (dim,)),
        ("attn.qkv.weight", (3 * dim, dim)),
        ("attn.out.weight", (dim, dim)),
        ("mlp_norm.weight", (dim,)),
        ("mlp.up.weight", (hidden, dim)),
        ("mlp.down.weight", (dim, hidden)),
    ):
        spec[f"{prefix}.{name}"] = (shape, fields)


def tensor_spec(cfg: ModelConfig) -> Spec:
    """Every parameter tensor of the model `cfg` describes (blt.model.BLT or blt.baseline.ByteTransformer)."""
    spec: Spec = {}
    if not isinstance(cfg, BLTConfig):
        f = ("dim",)
        spec["embed.weight"] = ((cfg.vocab_size, cfg.dim), f)
        for i in range(cfg.n_layers):
            _block(spec, f"layers.{i}", cfg.dim, cfg.mlp_mult, ("n_layers", "dim", "mlp_mult"))
        spec["norm.weight"] = ((cfg.dim,), f)
        spec["head.weight"] = ((cfg.vocab_size, cfg.dim), f)
        return spec
    De, Dg, Dd, V = cfg.enc_dim, cfg.global_dim, cfg.dec_dim, cfg.vocab_size
    spec["byte_embed.weight"] = ((V, De), ("enc_dim",))
    n_hash = cfg.ngram_max - cfg.ngram_min + 1
    spec["hash_embed.table.weight"] = ((n_hash * cfg.hash_rows, De), ("ngram_min", "ngram_max", "hash_rows", "enc_dim"))
    if cfg.copy_ngrams:
        rows = (VOCAB_SIZE + 1) * len(cfg.copy_ngrams)
        spec["copy_embed.table.weight"] = ((rows, De), ("copy_short", "copy_long", "enc_dim"))
    for i in range(cfg.enc_layers):
        _block(spec, f"encoder.{i}", De, cfg.mlp_mult, ("enc_layers", "enc_dim", "mlp_mult"))
    pf = ("enc_dim", "global_dim")
    for name, shape in (
        ("q_norm.weight", (De,)),
        ("kv_norm.weight", (De,)),
        ("wq.weight", (De, De)),
        ("wkv.weight", (2 * De, De)),
        ("wo.weight", (De, De)),
        ("proj.weight", (Dg, De)),
    ):
        spec[f"pooler.{name}"] = (shape, pf)
    for i in range(cfg.global_layers):
        _block(spec, f"global_layers.{i}", Dg, cfg.mlp_mult, ("global_layers", "global_dim", "mlp_mult"))
    spec["global_norm.weight"] = ((Dg,), ("global_dim",))
    spec["null_patch"] = ((Dg,), ("global_dim",))
    if De != Dd:
        spec["dec_in.weight"] = ((Dd, De), ("enc_dim", "dec_dim"))
    df = ("dec_layers", "dec_dim", "global_dim", "cross_k")
    for i in range(cfg.dec_layers):
        spec[f"decoder.{i}.cross.norm.weight"] = ((Dd,), df)
        spec[f"decoder.{i}.cross.wq.weight"] = ((Dd, Dd), df)
        spec[f"decoder.{i}.cross.wkv.weight"] = ((2 * cfg.cross_k * Dd, Dg), df)
        spec[f"decoder.{i}.cross.wo.weight"] = ((Dd, Dd), df)
        _block(spec, f"decoder.{i}.block", Dd, cfg.mlp_mult, ("dec_layers", "dec_dim", "mlp_mult"))
    spec["norm.weight"] = ((Dd,), ("dec_dim",))
    spec["head.weight"] = ((V, Dd), ("dec_dim",))
    return spec


def read_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, its framing checked against the file size (no tensor data read)."""
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file}: truncated ({size} bytes), not a safetensors file")
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size or n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{file}: corrupt safetensors header length {n} for a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{file}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: corrupt safetensors header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            shape = tuple(int(d) for d in info["shape"])
            end = max(end, int(stop))
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{file}: corrupt safetensors entry for {name!r}") from None
        if int(start) > int(stop) or any(d < 0 for d in shape):
            raise CheckpointError(f"{file}: corrupt safetensors entry for {name!r}")
    if 8 + n + end != size:
        raise CheckpointError(f"{file}: truncated or corrupt: header says {8 + n + end} bytes, file has {size}")
    return header


def _fields(cfg: ModelConfig, names: tuple[str, ...], where: str) -> str:
    return ", ".join(f"{where}.{f}={getattr(cfg, f)}" for f in names)


def _params(shapes: Any) -> int:
    return sum(math.prod(s) for s in shapes)


def check_header(cfg: ModelConfig, header: dict[str, Any], file: Path, cfg_file: Path, where: str = "config") -> None:
    """Refuse `cfg` unless `file`'s header holds exactly the tensors it implies, each of the right shape.

    Layer counts are compared first, so an absurd count is refused without enumerating its tensors.
    `where` is the config's place in `cfg_file` (e.g. "config", "entropy_config"), for the message.
    """
    names = [k for k in header if k != "__metadata__"]
    for prefix, field in layer_lists(cfg):
        idx = {k.split(".")[1] for k in names if k.startswith(prefix + ".")}
        in_file = len([i for i in idx if i.isdigit()])
        if getattr(cfg, field) != in_file:
            raise CheckpointError(
                f"{cfg_file}: {where}.{field} is {getattr(cfg, field)} but {file.name} holds {in_file} "
                f"('{prefix}.N.*' tensors): the config does not match the weights"
            )
    spec = tensor_spec(cfg)
    missing = sorted(set(spec) - set(names))
    unexpected = sorted(set(names) - set(spec))
    if missing or unexpected:
        more_m, more_u = ("..." if len(missing) > 5 else ""), ("..." if len(unexpected) > 5 else "")
        hint = f" (implied by {_fields(cfg, spec[missing[0]][1], where)} in {cfg_file.name})" if missing else ""
        n_cfg = _params(s for s, _ in spec.values())
        n_file = _params(tuple(header[k]["shape"]) for k in names)
        raise CheckpointError(
            f"{file}: tensors do not match the config: missing {missing[:5]}{more_m}{hint}, "
            f"unexpected {unexpected[:5]}{more_u}; the config implies {n_cfg} parameters, the file holds {n_file}"
        )
    for name, (shape, fields) in spec.items():
        got = tuple(int(d) for d in header[name]["shape"])
        if got != shape:
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {got}, the config needs {shape} "
                f"(from {_fields(cfg, fields, where)} in {cfg_file.name})"
            )
        if header[name].get("dtype") not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{file}: tensor {name!r} has dtype {header[name].get('dtype')}, expected floating point"
            )
