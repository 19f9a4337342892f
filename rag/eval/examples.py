"""Prompts with reference answers for `eval generation`: JSONL/JSON records, chat transcripts, split filters."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError
from ingest.readers import ReadError, from_object, iter_files, read_path
from ingest.records import HELDOUT, split_name
from rag.eval.beir import load_records, split_heldout


class GenerationError(ShvayambhuError, ValueError):
    """Bad input, a bad --config, or a results folder that does not match the run; the message says which."""


@dataclass
class Example:
    """A prompt, the conversation before it, and the reference response."""

    prompt: str
    reference: str
    history: list[dict[str, str]] = field(default_factory=list)
    source: str = ""  # file:line
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            blob = json.dumps([self.history, self.prompt, self.reference], ensure_ascii=False, sort_keys=True)
            self.id = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        raise GenerationError(f"{where}: 'messages'/'history' must be a list of {{role, content}} strings")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _from_object(obj: Any, where: str) -> list[Example]:
    """Examples from one JSON object: chat `messages` (each assistant turn, with the turns before it as
    history), or any shape the ingest readers know, with an optional `history` list."""

    if isinstance(obj, dict) and "messages" in obj:
        msgs = _messages(obj["messages"], where)
        out = []
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and i > 0 and msgs[i - 1]["role"] == "user":
                out.append(Example(msgs[i - 1]["content"], m["content"], msgs[: i - 1], f"{where} turn {len(out)}"))
        if not out:
            raise GenerationError(f"{where}: no user turn followed by an assistant turn in 'messages'")
        return out
    got = from_object(obj, where.rsplit(":", 1)[0], 0)
    if isinstance(got, str):
        raise GenerationError(f"{where}: {got}")
    history = _messages(obj["history"], where) if isinstance(obj, dict) and "history" in obj else []
    return [Example(r.prompt, r.response, list(history), where) for r in got]


def _read_file(path: Path) -> Iterator[Example | str]:
    """Examples of one file, or a 'file:line: reason' string for each line that cannot be used."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                where = f"{path}:{n}"
                try:
                    text = raw.decode("utf-8")
                    if not text.strip():
                        continue
                    yield from _from_object(json.loads(text), where)
                except UnicodeDecodeError:
                    yield f"{where}: undecodable bytes (not UTF-8)"
                except json.JSONDecodeError as e:
                    yield f"{where}: invalid JSON: {e.msg}"
                except GenerationError as e:
                    yield str(e)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            yield f"{path}: cannot read ({e}); the whole file was skipped"
            return
        for i, obj in enumerate(data if isinstance(data, list) else [data]):
            try:
                yield from _from_object(obj, f"{path}:item {i + 1}")
            except GenerationError as e:
                yield str(e)
    else:
        for r in read_path(path):
            if hasattr(r, "prompt"):
                yield Example(r.prompt, r.response, [], f"{r.source}:{r.line}")
            else:
                yield str(r)


def load_examples(
    paths: Sequence[str | Path] | None = None, *, split: str | None = None, limit: int | None = None
) -> tuple[list[Example], list[str]]:
    """(examples, problems). No paths: the held-out split of the bundled corpus. With `split`, only records
    whose `split` field matches are kept (files given explicitly are used whole by default)."""

    problems: list[str] = []
    if not paths:
        records = load_records(None)
        if split is None or split_name(split) == HELDOUT:
            _, held, _ = split_heldout(records)
        else:
            held = [r for r in records if split_name(r.split) == split_name(split)]
        examples = [Example(r.prompt, r.response, [], f"{r.source}:{r.line}") for r in held]
    else:
        examples = []
        try:
            files = list(iter_files(paths))
        except ReadError as e:
            raise GenerationError(str(e)) from None
        for f in files:
            for item in _read_file(f):
                (problems.append if isinstance(item, str) else examples.append)(item)
        if split:
            keep = _split_filter(files, split)
            examples = [e for e in examples if e.source.split(" turn ")[0] in keep]
    seen: set[str] = set()
    unique = [e for e in examples if not (e.id in seen or seen.add(e.id))]
    if len(unique) < len(examples):
        problems.append(f"{len(examples) - len(unique)} duplicate example(s) were dropped")
    return (unique[:limit] if limit else unique), problems


def _split_filter(files: Sequence[Path], split: str) -> set[str]:
    """`file:line` of JSONL records whose `split` field is `split`."""
    keep: set[str] = set()
    for f in files:
        if f.suffix.lower() != ".jsonl":
            continue
        for n, raw in enumerate(f.open("rb"), start=1):
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict) and split_name(obj.get("split")) == split_name(split):
                keep.add(f"{f}:{n}")
    return keep
