"""Readers: our JSONL/JSON shape, Alpaca, Dolly, chat `messages`, and .txt/.md files chunked by paragraph."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError
from ingest.records import Record, split_name
from ingest.validate import Rejection

EXTENSIONS = (".jsonl", ".json", ".txt", ".md")
CHUNK_BYTES = 1500


class ReadError(ShvayambhuError, ValueError):
    """A path that cannot be read at all (missing, or a type we do not read)."""


def from_object(obj: Any, source: str, line: int) -> list[Record] | str:
    """Records from one JSON object in any supported shape, or the reason it is not one."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    common = {
        "model": obj.get("model") if isinstance(obj.get("model"), str) else None,
        "category": obj.get("category") if isinstance(obj.get("category"), str) else None,
        "split": split_name(obj.get("split")),
        "meta": obj.get("meta") if isinstance(obj.get("meta"), dict) else {},
        "source": source,
        "line": line,
    }
    if "messages" in obj:
        return _from_chat(obj["messages"], common)
    if "prompt" in obj or ("response" in obj and "instruction" not in obj):
        prompt, response = obj.get("prompt"), obj.get("response")
    elif "instruction" in obj and "output" in obj:  # Alpaca
        prompt, response = _join(obj.get("instruction"), obj.get("input")), obj.get("output")
    elif "instruction" in obj and "response" in obj:  # Dolly
        prompt, response = _join(obj.get("instruction"), obj.get("context")), obj.get("response")
        if isinstance(obj.get("category"), str):
            common["category"] = obj["category"]
    else:
        keys = ", ".join(sorted(obj)) or "none"
        return f"unknown record shape (fields: {keys}); expected prompt/response, Alpaca, Dolly or messages"
    for name, value in (("prompt", prompt), ("response", response)):
        if value is None:
            return f"missing field {name!r}"
        if not isinstance(value, str):
            return f"field {name!r} must be a string, got {type(value).__name__}"
    return [Record(prompt=prompt, response=response, **common)]


def _join(instruction: Any, extra: Any) -> Any:
    if isinstance(instruction, str) and isinstance(extra, str) and extra.strip():
        return f"{instruction}\n\n{extra}"
    return instruction


def _from_chat(messages: Any, common: dict[str, Any]) -> list[Record] | str:
    """Each assistant turn becomes a record whose prompt is the user turn before it."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "field 'messages' must be a list of {role, content} objects"
    out, last_user = [], None
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str):
            return f"messages[{i}].content must be a string"
        if role == "user":
            last_user = content
        elif role == "assistant" and last_user is not None:
            meta = {**common["meta"], "turn": len(out)}
            out.append(Record(prompt=last_user, response=content, **{**common, "meta": meta}))
            last_user = None
    return out or "no user/assistant pair in 'messages'"


def _decode_lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None when undecodable, reason) for each line of a file."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                yield n, raw.decode("utf-8"), ""
            except UnicodeDecodeError as e:
                yield n, None, f"undecodable bytes (not UTF-8) at byte {e.start} of the line"


def read_jsonl(path: Path) -> Iterator[Record | Rejection]:
    src = str(path)
    for n, text, why in _decode_lines(path):
        if text is None:
            yield Rejection(src, n, why)
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield Rejection(src, n, f"invalid JSON: {e.msg} at column {e.colno}")
            continue
        got = from_object(obj, src, n)
        yield from ([Rejection(src, n, got)] if isinstance(got, str) else got)


def read_json(path: Path) -> Iterator[Record | Rejection]:
    """A JSON array of records; the 'line' of each is the line its object starts on."""
    src = str(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        yield Rejection(src, line, "undecodable bytes (not UTF-8); the whole file was skipped")
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        yield Rejection(src, e.lineno, f"invalid JSON: {e.msg} at column {e.colno}; the whole file was skipped")
        return
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        yield Rejection(src, 1, "expected a JSON array of records")
        return
    starts = _object_lines(text)
    for i, obj in enumerate(data):
        line = starts[i] if i < len(starts) else i + 1
        got = from_object(obj, src, line)
        yield from ([Rejection(src, line, got)] if isinstance(got, str) else got)


def _object_lines(text: str) -> list[int]:
    """Line numbers where each top-level object of a JSON array starts."""
    lines, depth, line, in_str, esc = [], 0, 1, False, False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            esc, in_str = (False, True) if esc else (ch == "\\", ch != '"')
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            if ch == "{" and depth == 1:
                lines.append(line)
            depth += 1
        elif ch in "]}":
            depth -= 1
    return lines


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*)$")


def read_text(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Record | Rejection]:
    """Paragraphs packed into chunks under `chunk_bytes`; a Markdown heading names the chunks below it."""
    src, title = str(path), path.stem.replace("_", " ").replace("-", " ")
    heading, paras, start = title, [], 0
    pending: list[tuple[int, str, str]] = []  # (line, heading, paragraph)
    for n, text, why in _decode_lines(path):
        if text is None:
            yield Rejection(src, n, why)
            continue
        m = _HEADING.match(text) if path.suffix == ".md" else None
        if m or not text.strip():
            if paras:
                pending.append((start, heading, "\n".join(paras)))
                paras = []
            if m:
                heading = f"{title}: {m.group(1).strip()}"
            continue
        if not paras:
            start = n
        paras.append(text.rstrip("\n"))
    if paras:
        pending.append((start, heading, "\n".join(paras)))
    yield from _pack(pending, src, chunk_bytes)


def _pack(paragraphs: list[tuple[int, str, str]], src: str, limit: int) -> Iterator[Record]:
    body: list[str] = []
    line, head = 0, ""
    for n, h, p in paragraphs:
        size = len("\n\n".join([*body, p]).encode("utf-8"))
        if body and (h != head or size > limit):
            yield Record(prompt=head, response="\n\n".join(body), source=src, line=line, kind="text")
            body = []
        if not body:
            line, head = n, h
        body.append(p)
    if body:
        yield Record(prompt=head, response="\n\n".join(body), source=src, line=line, kind="text")


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named, and files with a readable extension under folders named (recursively, sorted)."""
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in EXTENSIONS and not f.name.endswith(".rejected.jsonl"):
                    yield f
        elif p.is_file():
            if p.suffix.lower() not in EXTENSIONS:
                raise ReadError(f"{p}: cannot read {p.suffix or 'extensionless'} files; use {', '.join(EXTENSIONS)}")
            yield p
        else:
            raise ReadError(f"{p}: no such file or folder")


def read_path(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Record | Rejection]:
    """Everything under one path: records, and rejections for what could not be parsed."""
    for f in iter_files([path]):
        suffix = f.suffix.lower()
        if suffix == ".jsonl":
            yield from read_jsonl(f)
        elif suffix == ".json":
            yield from read_json(f)
        else:
            yield from read_text(f, chunk_bytes)


def read_records(paths: Iterable[str | Path]) -> list[Record]:
    """Just the parsable records of `paths` (no validation) - for training and evaluation inputs."""
    return [r for p in paths for r in read_path(p) if isinstance(r, Record)]
