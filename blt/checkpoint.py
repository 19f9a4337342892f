"""Checkpoints: a folder with model.safetensors, entropy.safetensors (when there is an entropy model),
config.json (everything needed to rebuild, with a format version) and metrics.json.

Saving writes a temporary sibling folder and renames it into place, so an interrupted save leaves any
earlier checkpoint intact. Loading never unpickles anything; it checks the config against each weights file's
header before building a model (blt.tensor_spec), then every tensor; any problem is a ``CheckpointError``
naming the file. ``cached_checkpoint`` is the one cache of loaded checkpoints: it reloads when a file changes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from blt import tokens
from blt.baseline import ByteTransformer
from blt.config import BaselineConfig, BLTConfig, EntropyConfig
from blt.entropy import EntropyModel
from blt.errors import CheckpointError
from blt.model import BLT
from blt.tensor_spec import ModelConfig, check_header, read_header

FORMAT_VERSION = 1
KINDS = ("blt", "baseline")
MODEL_FILE = "model.safetensors"
ENTROPY_FILE = "entropy.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"  # shipped in the package

__all__ = ["Checkpoint", "CheckpointError", "cached_checkpoint", "export_checkpoint", "load_checkpoint"]


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
        raise CheckpointError(f"{path}: exists and is not a checkpoint folder; refusing to replace it")

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


def load_weights(
    model_cls: type[nn.Module], cfg: ModelConfig, file: Path, cfg_file: Path, where: str = "config"
) -> nn.Module:
    """Build ``model_cls(cfg)`` and load ``file`` into it, in eval mode; the config is checked against the
    file's header first, so nothing is allocated for a config that does not match the weights."""
    check_header(cfg, read_header(file), file, cfg_file, where)
    model = model_cls(cfg)
    _load_arrays(model, file)
    model.eval()
    return model


def _load_arrays(module: nn.Module, file: Path) -> None:
    """Load ``file`` (its header already checked against the config) into ``module``, cast to its dtypes."""
    try:
        arrays = mx.load(str(file), format="safetensors")
    except Exception as e:  # MLX raises several types for bad files
        raise CheckpointError(f"{file}: cannot read tensors ({e})") from None
    expected = dict(tree_flatten(module.parameters()))
    if {k: v.shape for k, v in expected.items()} != {k: v.shape for k, v in arrays.items()}:  # header was checked
        raise CheckpointError(f"{file}: its tensors do not match the model built from the config")
    arrays = {k: a.astype(expected[k].dtype) for k, a in arrays.items()}
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

    model_cls = BLT if isinstance(config, BLTConfig) else ByteTransformer
    model = load_weights(model_cls, config, path / MODEL_FILE, cfg_file)
    entropy_model = None
    if entropy_config is not None:
        entropy_model = load_weights(EntropyModel, entropy_config, path / ENTROPY_FILE, cfg_file, "entropy_config")
    metrics = _read_json(path / METRICS_FILE)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path / METRICS_FILE}: expected a JSON object")
    return Checkpoint(model, config, entropy_model, entropy_config, metrics, kind, path)


def export_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str | None = "bfloat16",
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Copy a checkpoint to ``dst`` with smaller weights (for shipping); ``metrics`` are merged into its own."""
    ck = load_checkpoint(src)
    return save_checkpoint(
        dst,
        model=ck.model,
        config=ck.config,
        entropy_model=ck.entropy_model,
        entropy_config=ck.entropy_config,
        metrics={**ck.metrics, **(metrics or {})},
        kind=ck.kind,
        dtype=dtype,
    )


def checkpoint_stamp(path: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(name, size, mtime_ns, inode) of the folder and each of its files: any rewrite changes it."""
    out = []
    for p in (path, *(path / f for f in (CONFIG_FILE, METRICS_FILE, MODEL_FILE, ENTROPY_FILE))):
        try:
            st = p.stat()
        except OSError:
            continue  # a missing file: load_checkpoint says what is wrong
        out.append((p.name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


@lru_cache(maxsize=2)
def _load_stamped(path: str, stamp: tuple[tuple[str, int, int, int], ...]) -> Checkpoint:
    return load_checkpoint(path)


def cached_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint at ``path``, loaded once and reloaded when any of its files changes (size, mtime_ns or
    inode), so a long-running process serves the weights that are on disk now. Shared: do not mutate it."""
    p = Path(path).resolve()
    return _load_stamped(str(p), checkpoint_stamp(p))
