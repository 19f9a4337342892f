"""A cache of a GGUF model's dequantized float32 weights as safetensors, so a CPU load is one `mx.load`.

Dequantizing SmolLM2-135M's Q4_1 tensors on a CPU takes seconds (MLX runs it on one thread); reading the
float32 result back takes a fraction of that. The cache lies beside the embedder's ONNX cache
(`$XDG_CACHE_HOME/shvayambhu/mlx`, else `~/.cache/shvayambhu/mlx`), one file per GGUF file, named by a key over
the file's path, size and modification time and MLX's version: an edited or replaced model gets a new entry.
It is written to a temporary file and renamed, so a reader never sees half of it; a file that cannot be read
or does not fit the model is made again. Safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when what is stored changes


def cache_dir() -> Path:
    """Where dequantized weights are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shvayambhu" / "mlx"


def cache_path(gguf: Path) -> Path:
    """The cache file for `gguf` as it is now (path, size, mtime) under this MLX version."""
    import mlx.core as mx

    st = gguf.stat()
    key = f"{FORMAT}|{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{mx.__version__}"
    return cache_dir() / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.float32.safetensors"


def load_cached(gguf: Path) -> dict[str, Any] | None:
    """The cached float32 weights of `gguf`, evaluated; None when there are none or they cannot be read
    (a damaged file is removed)."""
    import mlx.core as mx

    target = cache_path(gguf)
    if not target.is_file():
        return None
    try:
        weights = mx.load(str(target))
        mx.eval(list(weights.values()))
    except (RuntimeError, ValueError, OSError) as e:
        discard(target, f"it cannot be read ({str(e).splitlines()[0][:120]})")
        return None
    return weights


def discard(target: Path, why: str) -> None:
    """Remove a damaged cache file, saying so on stderr."""
    print(f"warning: the cached model weights {target} are damaged: {why}; making them again", file=sys.stderr)
    target.unlink(missing_ok=True)


def store(gguf: Path, weights: dict[str, Any]) -> Path | None:
    """Write `weights` as `gguf`'s cache entry (atomically) and drop older entries of the same file;
    None when the cache folder cannot be written (loading still works, only slower next time)."""
    import mlx.core as mx

    target = cache_path(gguf)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".safetensors", dir=target.parent)
        os.close(fd)
        try:
            mx.save_safetensors(tmp, weights, metadata={"source": str(gguf.resolve()), "format": str(FORMAT)})
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        return None
    for old in target.parent.glob(f"{gguf.stem}-*.float32.safetensors"):
        if old != target and _source(old) == str(gguf.resolve()):  # an older version of this same file
            old.unlink(missing_ok=True)
    return target


def _source(path: Path) -> str | None:
    import mlx.core as mx

    try:
        return mx.load(str(path), return_metadata=True)[1].get("source")
    except (RuntimeError, ValueError, OSError):
        return None
