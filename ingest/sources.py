"""Where a record came from: the canonical absolute path of its file, so `cd` and spelling never change it.

Prune and edit-replace act within one source, so two spellings of one file (`s.jsonl`, `./s.jsonl`, its
absolute path, a symlink to it) must be one source, and `data.jsonl` in two projects must be two.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ingest.records import content_hash


def canonical(path: str | Path) -> str:
    """The absolute path of `path` with every symlink resolved."""
    return str(Path(os.path.realpath(path)))


def spellings(files: Iterable[str | Path], typed: Iterable[str | Path] = ()) -> set[str]:
    """Relative names an older version may have stored for `files`: as typed, and relative to the cwd."""
    out = {str(t) for t in typed if not os.path.isabs(t)}
    for f in files:
        try:
            out.add(os.path.relpath(f))
        except ValueError:  # another drive (Windows)
            continue
    return out


def relative_sources(collection: Any, candidates: Iterable[str] | None = None) -> dict[str, int]:
    """Sources stored as typed by an older version (not absolute), with their record counts.

    With `candidates`, only those names are looked up (one indexed query); without, every record is read."""
    if candidates is not None:
        names = sorted(set(candidates))
        if not names:
            return {}
        got = collection.get(where={"source": {"$in": names}}, include=["metadatas"])
    else:
        got = collection.get(include=["metadatas"])
    out: dict[str, int] = {}
    for meta in got["metadatas"]:
        src = str((meta or {}).get("source", ""))
        if src and not os.path.isabs(src):
            out[src] = out.get(src, 0) + 1
    return out


def migrate_sources(collection: Any, base: str | Path) -> int:
    """Rewrite relative sources as canonical paths resolved against `base` (the folder they were ingested from).

    Only sources naming a file that exists under `base` are rewritten; the record's slot key moves with its
    source, so later edits still replace it. Returns the number of records rewritten.
    """
    got = collection.get(include=["metadatas"])
    ids, metas = [], []
    for id_, meta in zip(got["ids"], got["metadatas"], strict=True):
        meta = dict(meta or {})
        src = str(meta.get("source", ""))
        if not src or os.path.isabs(src) or not (Path(base) / src).is_file():
            continue
        meta["source"] = canonical(Path(base) / src)
        meta["key"] = content_hash(meta["source"], str(meta.get("prompt", "")))
        ids.append(id_)
        metas.append(meta)
    for i in range(0, len(ids), 500):
        collection.update(ids=ids[i : i + 500], metadatas=metas[i : i + 500])
    return len(ids)
