"""The keys and values of a prompt head (system line and fixed instructions) kept on disk between processes.

Every prompt of a layout starts with the same ~80 tokens. A server reads them once at start-up
(`rag.consciousness.prompt.keep_head`); a one-question CLI process would compute them again for each question,
about a quarter of its prefill. Here they are saved, after the first process computed them, beside the weight
cache (rag.backends.weight_cache.cache_dir) as safetensors named by a digest of the model's identity and the
head's tokens, and read back in milliseconds. The tokens are stored in the file and checked on reading, so a
file never stands for another head; an unreadable file is removed and made again. At most MAX_FILES heads are
kept (the least recently written go first). Safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.backends.weight_cache import cache_dir

FORMAT = 1  # bump when what is stored changes
MAX_FILES = 16  # heads kept on disk at most (each ~3.5 MB for SmolLM2-135M's ~80-token head)


def head_path(model_key: str, tokens: Sequence[int]) -> Path:
    """The file for the head `tokens` of the model identified by `model_key`."""
    digest = hashlib.sha256(f"{FORMAT}|{model_key}|{','.join(map(str, tokens))}".encode()).hexdigest()[:20]
    return cache_dir() / f"head-{digest}.safetensors"


def load_head(path: Path, tokens: Sequence[int]) -> tuple[list[Any], list[Any]] | None:
    """(keys, values) per layer stored at `path` for exactly `tokens`; None when there is no such file, or it
    holds another head or cannot be read (then it is removed)."""
    import mlx.core as mx

    if not path.is_file():
        return None
    try:
        arrays, meta = mx.load(str(path), return_metadata=True)
        layers = int(meta.get("layers", "-1"))
        keys = [arrays[f"k{i}"] for i in range(layers)]
        values = [arrays[f"v{i}"] for i in range(layers)]
        if json.loads(meta.get("tokens", "null")) != list(tokens) or not keys:
            raise ValueError("it holds another prompt head")
        if any(k.shape[2] != len(tokens) or v.shape != k.shape for k, v in zip(keys, values, strict=True)):
            raise ValueError("its arrays do not fit the head")
        mx.eval(keys, values)
    except (RuntimeError, ValueError, KeyError, OSError, json.JSONDecodeError):
        path.unlink(missing_ok=True)
        return None
    return keys, values


def save_head(path: Path, tokens: Sequence[int], keys: Sequence[Any], values: Sequence[Any]) -> None:
    """Write a head's keys and values atomically, then keep the MAX_FILES newest heads; a folder that cannot be
    written is passed over (the head is computed again next time)."""
    import mlx.core as mx

    arrays = {f"k{i}": k for i, k in enumerate(keys)} | {f"v{i}": v for i, v in enumerate(values)}
    meta = {"format": str(FORMAT), "layers": str(len(keys)), "tokens": json.dumps(list(tokens))}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".head-", suffix=".safetensors", dir=path.parent)
        os.close(fd)
        try:
            mx.save_safetensors(tmp, arrays, metadata=meta)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        heads = sorted(path.parent.glob("head-*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in heads[MAX_FILES:]:
            old.unlink(missing_ok=True)
    except OSError:
        return
