"""Checkpoints: a folder with model.safetensors, entropy.safetensors (when there is an entropy model),
config.json (everything needed to rebuild, with a format version) and metrics.json.

Saving writes a temporary sibling folder and renames it into place, so an interrupted save leaves any
earlier checkpoint intact. Loading never unpickles anything and checks every file, tensor name and shape;
any problem is a ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from blt import tokens
from blt.baseline import ByteTransformer
from blt.config import BaselineConfig, BLTConfig, EntropyConfig
from blt.entropy import EntropyModel
from blt.errors import BLTError
from blt.model import BLT

FORMAT_VERSION = 1
KINDS = ("blt", "baseline")
MODEL_FILE = "model.safetensors"
ENTROPY_FILE = "entropy.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"  # shipped in the package


class CheckpointError(BLTError):
    """A checkpoint folder is missing, incomplete, corrupt or does not match its config."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: models in eval mode plus their configs and training metrics."""

    model: BLT | ByteTransformer
    config: BLTConfig | BaselineConfig
    entropy_model: EntropyModel | None
    entropy_config: EntropyConfig | None
    metrics: dict[str, Any] = field(default_factory=dict)
    kind: str = "blt"
    path: Path | None = None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: BLT | ByteTransformer,
    config: BLTConfig | BaselineConfig,
    entropy_model: EntropyModel | None = None,
    entropy_config: EntropyConfig | None = None,
    metrics: dict[str, Any] | None = None,
    kind: str = "blt",
    dtype: str | None = None,
) -> Path:
    """Write a checkpoint folder at ``path`` atomically (replacing an earlier checkpoint there).

    ``dtype`` ("bfloat16", "float16") stores smaller weights; loading casts them back to the model's dtype.
    """
    path = Path(path)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    want_model, want_cfg = (BLT, BLTConfig) if kind == "blt" else (ByteTransformer, BaselineConfig)
    if not isinstance(model, want_model) or not isinstance(config, want_cfg):
        raise ValueError(f"kind={kind!r} needs a {want_model.__name__} and a {want_cfg.__name__}")
    if entropy_model is not None:
        entropy_config = entropy_config or entropy_model.cfg
        if entropy_model.cfg != entropy_config:
            raise ValueError("entropy_config does not match entropy_model.cfg")
    if kind == "blt":
        entropy_config = entropy_config or config.entropy
        if entropy_config != config.entropy:
            raise ValueError("entropy_config differs from config.entropy (which describes the entropy model)")
        if entropy_model is None and config.patcher.needs_entropy:
            raise ValueError(f"patcher kind {config.patcher.kind!r} needs an entropy_model in the checkpoint")
    if path.exists() and not (path / CONFIG_FILE).exists() and any(path.iterdir()):
        raise ValueError(f"{path} exists and is not a checkpoint folder; refusing to replace it")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = [MODEL_FILE]
        cast = getattr(mx, dtype) if dtype else None

        def weights(m: nn.Module) -> dict[str, mx.array]:
            return {k: v.astype(cast) if cast is not None else v for k, v in tree_flatten(m.parameters())}

        mx.save_safetensors(str(tmp / MODEL_FILE), weights(model), {"kind": kind})
        if entropy_model is not None:
            files.append(ENTROPY_FILE)
            mx.save_safetensors(str(tmp / ENTROPY_FILE), weights(entropy_model))
        _write_json(
            tmp / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "config": config.to_dict(),
                "entropy_config": None if entropy_model is None else entropy_config.to_dict(),
                "files": files,
                "tokens": {
                    "PAD": tokens.PAD,
                    "BOS": tokens.BOS,
                    "EOS": tokens.EOS,
                    "SEP": tokens.SEP,
                    "OFFSET": tokens.OFFSET,
                    "VOCAB_SIZE": tokens.VOCAB_SIZE,
                },
            },
        )
        _write_json(tmp / METRICS_FILE, metrics or {})
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _check_safetensors(file: Path) -> dict[str, Any]:
    """Validate a safetensors file's framing and header before handing it to MLX; return the header."""
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file}: truncated ({size} bytes), not a safetensors file")
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
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
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{file}: corrupt safetensors entry for {name!r}") from None
        end = max(end, int(stop))
    if 8 + n + end != size:
        raise CheckpointError(
            f"{file}: truncated or corrupt: header says {8 + n + end} bytes, file has {size}"
        )
    return header


def _load_weights(module: nn.Module, file: Path) -> None:
    """Load ``file`` into ``module`` after checking every tensor's name and shape."""
    _check_safetensors(file)
    try:
        arrays = mx.load(str(file), format="safetensors")
    except Exception as e:  # MLX raises several types for bad files
        raise CheckpointError(f"{file}: cannot read tensors ({e})") from None
    expected = dict(tree_flatten(module.parameters()))
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        more_m, more_u = ("..." if len(missing) > 5 else ""), ("..." if len(unexpected) > 5 else "")
        raise CheckpointError(
            f"{file}: tensors do not match the config: missing {missing[:5]}{more_m}, "
            f"unexpected {unexpected[:5]}{more_u}"
        )
    for name, ref in expected.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {tuple(a.shape)}, the config needs {tuple(ref.shape)}"
            )
        if not mx.issubdtype(a.dtype, mx.floating):
            raise CheckpointError(f"{file}: tensor {name!r} has dtype {a.dtype}, expected floating point")
        arrays[name] = a.astype(ref.dtype)
    module.update(tree_unflatten(list(arrays.items())))
    mx.eval(module.parameters())


def _read_json(file: Path) -> Any:
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Rebuild the models of the checkpoint folder ``path``; raises CheckpointError on any problem."""
    path = Path(path)
    if not path.is_dir():
        backups = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        hint = f" (an interrupted save left the previous checkpoint at {backups[0]})" if backups else ""
        raise CheckpointError(f"{path}: no checkpoint folder here{hint}")
    cfg_file = path / CONFIG_FILE
    meta = _read_json(cfg_file)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfg_file}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_file}: format_version {version!r} is not supported (this code reads {FORMAT_VERSION})"
        )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{cfg_file}: kind {kind!r} is not one of {KINDS}")
    try:
        config_cls = BLTConfig if kind == "blt" else BaselineConfig
        config: BLTConfig | BaselineConfig = config_cls.from_dict(meta["config"])
        ecfg_dict = meta.get("entropy_config")
        entropy_config = None if ecfg_dict is None else EntropyConfig.from_dict(ecfg_dict)
    except KeyError as e:
        raise CheckpointError(f"{cfg_file}: missing key {e}") from None
    except ValueError as e:
        raise CheckpointError(f"{cfg_file}: invalid config: {e}") from None
    if isinstance(config, BLTConfig):
        if entropy_config is not None and entropy_config != config.entropy:
            raise CheckpointError(f"{cfg_file}: entropy_config differs from config.entropy")
        if entropy_config is None and config.patcher.needs_entropy:
            kind_ = config.patcher.kind
            raise CheckpointError(f"{cfg_file}: patcher {kind_!r} needs an entropy model, none is recorded")

    model = BLT(config) if isinstance(config, BLTConfig) else ByteTransformer(config)
    _load_weights(model, path / MODEL_FILE)
    entropy_model = None
    if entropy_config is not None:
        entropy_model = EntropyModel(entropy_config)
        _load_weights(entropy_model, path / ENTROPY_FILE)
        entropy_model.eval()
    model.eval()
    metrics = _read_json(path / METRICS_FILE)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path / METRICS_FILE}: expected a JSON object")
    return Checkpoint(model, config, entropy_model, entropy_config, metrics, kind, path)


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str | None = "bfloat16",
                      metrics: dict[str, Any] | None = None) -> Path:
    """Copy a checkpoint to ``dst`` with smaller weights (for shipping); ``metrics`` are merged into its own."""
    ck = load_checkpoint(src)
    return save_checkpoint(
        dst, model=ck.model, config=ck.config, entropy_model=ck.entropy_model, entropy_config=ck.entropy_config,
        metrics={**ck.metrics, **(metrics or {})}, kind=ck.kind, dtype=dtype,
    )
