"""Readers: our JSONL/JSON shape, Alpaca, Dolly, chat `messages`, and .txt/.md files chunked by paragraph."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError
from ingest.records import Record, split_name
from ingest.sources import canonical
from ingest.validate import MAX_RESPONSE_BYTES, Rejection

EXTENSIONS = (".jsonl", ".json", ".txt", ".md")
CHUNK_BYTES = 1500
MAX_META_DEPTH = 32  # nesting levels of a record's `meta`; deeper values are rejected, never recursed into
BINARY_PROBE = 8192  # bytes of a .txt/.md file looked at for NUL bytes


class ReadError(ShvayambhuError, ValueError):
    """A path that cannot be read at all (missing, or a type we do not read)."""


def from_object(obj: Any, source: str, line: int) -> list[Record] | str:
    """Records from one JSON object in any supported shape, or the reason it is not one."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    kind = obj.get("kind", "pair")
    if kind not in ("pair", "text"):
        return f'field \'kind\' must be "pair" (a prompt and its answer) or "text" (a titled passage), not {kind!r}'
    if _depth(obj.get("meta")) > MAX_META_DEPTH:
        return f"field 'meta' is nested deeper than {MAX_META_DEPTH} levels; flatten it"
    lone = _lone_surrogate(obj)
    if lone:
        return f"bad text: {lone}; the JSON escapes half of a UTF-16 pair (fix the exporter that wrote it)"
    common = {
        "model": obj.get("model") if isinstance(obj.get("model"), str) else None,
        "category": obj.get("category") if isinstance(obj.get("category"), str) else None,
        "split": split_name(obj.get("split")),
        "meta": obj.get("meta") if isinstance(obj.get("meta"), dict) else {},
        "source": source,
        "line": line,
        "kind": kind,
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


def _depth(value: Any, limit: int = MAX_META_DEPTH + 1) -> int:
    """Nesting depth of a JSON value, counted without recursion and only up to `limit`."""
    depth, level = 0, [value]
    while level and depth < limit:
        level = [v for x in level if isinstance(x, dict | list) for v in (x.values() if isinstance(x, dict) else x)]
        depth += 1
    return depth


_SURROGATE = re.compile(r"[\ud800-\udfff]")  # JSON's "\ud800" decodes to text that no encoder can write


def _lone_surrogate(obj: dict[str, Any]) -> str:
    """Where a record holds a lone surrogate (in a value or a field name), or "" (walked without recursion)."""
    level: list[tuple[str, Any]] = [("", obj)]
    while level:
        deeper: list[tuple[str, Any]] = []
        for path, value in level:
            if isinstance(value, str) and (m := _SURROGATE.search(value)):
                return f"field {path!r} holds a lone surrogate \\u{ord(m.group()):04x} at character {m.start()}"
            if isinstance(value, dict):
                for k, v in value.items():
                    name = f"{path}.{k}" if path else str(k)
                    if _SURROGATE.search(str(k)):
                        return f"field name {name!r} holds a lone surrogate"
                    deeper.append((name, v))
            elif isinstance(value, list):
                deeper += [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        level = deeper
    return ""


def _json_error(e: json.JSONDecodeError) -> str:
    """json's message without its trailing ' at' (it would read "... at at column 5")."""
    return f"invalid JSON: {e.msg.removesuffix(' at')} at column {e.colno}"


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


def read_jsonl(path: Path, source: str | None = None) -> Iterator[Record | Rejection]:
    """One record per line; a bad line is a rejection naming its line, and the other lines still count."""
    src, source = str(path), source or canonical(path)
    for n, text, why in _decode_lines(path):
        if text is None:
            yield Rejection(src, n, why)
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield Rejection(src, n, _json_error(e))
            continue
        except RecursionError:
            yield Rejection(src, n, "invalid JSON: nested too deeply to read; flatten the record")
            continue
        got = from_object(obj, source, n)
        yield from ([Rejection(src, n, got)] if isinstance(got, str) else got)


def read_json(path: Path, source: str | None = None) -> Iterator[Record | Rejection]:
    """A JSON array of records; the 'line' of each is the line its object starts on."""
    src, source = str(path), source or canonical(path)
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
        yield Rejection(src, e.lineno, f"{_json_error(e)}; the whole file was skipped")
        return
    except RecursionError:
        yield Rejection(src, 1, "invalid JSON: nested too deeply to read; the whole file was skipped")
        return
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        yield Rejection(src, 1, "expected a JSON array of records")
        return
    starts = _object_lines(text)
    for i, obj in enumerate(data):
        line = starts[i] if i < len(starts) else i + 1
        got = from_object(obj, source, line)
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


def read_text(path: Path, chunk_bytes: int = CHUNK_BYTES, source: str | None = None) -> Iterator[Record | Rejection]:
    """Paragraphs packed into chunks under `chunk_bytes`; a Markdown heading names the chunks below it."""
    src, title = str(path), path.stem.replace("_", " ").replace("-", " ")
    with path.open("rb") as f:
        nul = f.read(BINARY_PROBE).find(b"\0")
    if nul >= 0:
        yield Rejection(src, 1, f"binary file (a NUL byte at byte {nul}), not text: leave it out or convert it")
        return
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
    yield from _pack(pending, source or canonical(path), chunk_bytes)


_SENTENCE_END = re.compile(r"(?<=[.!?;:。।])\s+")


def split_paragraph(text: str, limit: int, over: int = MAX_RESPONSE_BYTES) -> list[str]:
    """A paragraph over `over` bytes (validation would reject it) cut into pieces under `limit` bytes: at
    sentence ends, else at spaces, else inside a word. Shorter paragraphs stay whole."""
    if len(text.encode("utf-8")) <= over:
        return [text]
    out: list[str] = []
    cur = ""
    for part in _SENTENCE_END.split(text.strip()):
        cand = f"{cur} {part}" if cur else part
        if len(cand.encode("utf-8")) <= limit:
            cur = cand
            continue
        if cur:
            out.append(cur)
        cur = part
        while len(cur.encode("utf-8")) > limit:
            head = _cut(cur, limit)
            out.append(head.rstrip())
            cur = cur[len(head) :].lstrip()
    if cur:
        out.append(cur)
    return out


def _cut(text: str, limit: int) -> str:
    """The longest prefix of `text` under `limit` bytes, ending at a space when there is one."""
    prefix = text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    space = prefix.rfind(" ")
    return prefix[: space + 1] if space > 0 else prefix


def _pack(paragraphs: list[tuple[int, str, str]], src: str, limit: int) -> Iterator[Record]:
    body: list[str] = []
    line, head = 0, ""
    pieces = [(n, h, piece) for n, h, p in paragraphs for piece in split_paragraph(p, limit)]
    for n, h, p in pieces:
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
    """Files named, and files with a readable extension under folders named (recursively, sorted), each as its
    canonical path (absolute, symlinks resolved): the one name a file has as a record's source."""
    for f in _iter_files(paths):
        yield Path(canonical(f))


def _iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
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
            raise ReadError(f"{p}: {_what_is(p)}")


def _what_is(p: Path) -> str:
    """Why `p` is neither a file nor a folder we can read, in words."""
    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop (the link points back to itself); fix or remove the link"
        if p.is_symlink():
            return f"a broken symlink (to {os.readlink(p)}); fix the link or name the file itself"
        if e.errno == errno.ENOENT:
            return "no such file or folder"
        return f"cannot look at it ({e.strerror})"
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"))
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{kind}, not a file: name a .jsonl, .json, .txt or .md file or a folder of them"


def read_file(f: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Record | Rejection]:
    """Records and rejections of one file, its records' source the file's canonical path.

    A file that cannot be read (permissions, an I/O error) is a ReadError: nothing is written, nothing pruned."""
    suffix, source = f.suffix.lower(), canonical(f)
    try:
        if suffix == ".jsonl":
            yield from read_jsonl(f, source)
        elif suffix == ".json":
            yield from read_json(f, source)
        else:
            yield from read_text(f, chunk_bytes, source)
    except OSError as e:
        raise ReadError(
            f"{f}: cannot read it ({e.strerror or e}); fix its permissions or the disk, or leave it out"
        ) from e


def read_path(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Record | Rejection]:
    """Everything under one path: records, and rejections for what could not be parsed."""
    for f in iter_files([path]):
        yield from read_file(f, chunk_bytes)


def read_records(paths: Iterable[str | Path]) -> list[Record]:
    """Just the parsable records of `paths` (no validation) - for training and evaluation inputs."""
    return [r for p in paths for r in read_path(p) if isinstance(r, Record)]
