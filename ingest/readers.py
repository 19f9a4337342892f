"""Readers: our JSONL/JSON shape, Alpaca, Dolly, chat `messages`; .txt/.md files and documents as passages."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError
from ingest.documents import DOCUMENT_EXTENSIONS
from ingest.passages import PASSAGE_BYTES, Passage, split_passages
from ingest.records import Record, split_name
from ingest.sources import canonical
from ingest.validate import Rejection

EXTENSIONS = (".jsonl", ".json", ".txt", ".md", *DOCUMENT_EXTENSIONS)
CHUNK_BYTES = PASSAGE_BYTES
PASSAGE = "passage"  # the meta key of a passage's heading path, span and page (stored as top-level metadata)
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


def read_text(path: Path, chunk_bytes: int = CHUNK_BYTES, source: str | None = None) -> Iterator[Record | Rejection]:
    """Passages of a .txt or .md file (see ingest.passages): heading-aware, sentence-bounded, under `chunk_bytes`."""
    src = str(path)
    raw = path.read_bytes()
    nul = raw.find(b"\0", 0, BINARY_PROBE)
    if nul >= 0:
        yield Rejection(src, 1, f"binary file (a NUL byte at byte {nul}), not text: leave it out or convert it")
        return
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        lines = []
        for n, line, why in _decode_lines(path):
            if line is None:
                yield Rejection(src, n, why)
            lines.append(line if line is not None else "\n")  # the line's place kept, its bytes left out
        text = "".join(lines).removeprefix("\ufeff")
    found = split_passages(text, markdown=path.suffix.lower() == ".md", limit=chunk_bytes)
    yield from passage_records(found, title_of(path), source or canonical(path))


def title_of(path: Path) -> str:
    """A file's title in words: its name without extension, `_` and `-` as spaces."""
    return path.stem.replace("_", " ").replace("-", " ")


def passage_records(passages: Iterable[Passage], title: str, source: str, page: int | None = None) -> Iterator[Record]:
    """Text records of passages: the prompt names the file title and heading path (and page), the meta its span."""
    for p in passages:
        where = ", ".join(x for x in (p.heading, f"page {page}" if page else "") if x)
        span: dict[str, Any] = {"heading": p.heading, "start": p.start, "end": p.end}
        if page:
            span["page"] = page
        yield Record(
            prompt=f"{title}: {where}" if where else title,
            response=p.text,
            source=source,
            line=p.line,
            kind="text",
            meta={PASSAGE: span},
        )


def read_document(
    path: Path, chunk_bytes: int = CHUNK_BYTES, source: str | None = None
) -> Iterator[Record | Rejection]:
    """Passages of a PDF, DOCX, PPTX, HTML or EPUB file converted to Markdown; raises Unreadable when it holds no
    text (encrypted, damaged, a scan without a text layer). A scanned page in a PDF with text is a rejection."""
    from ingest.documents import convert_pages, file_hash  # markitdown loads only when a document is read

    title, source, digest = title_of(path), source or canonical(path), file_hash(path)
    no_text: list[str] = []
    scanned = None  # known once the first page with text comes: pages without a text layer come before it
    for page in convert_pages(path):
        if page.no_text:
            no_text.append(str(page.number))
            continue
        if scanned is None:
            scanned = ",".join(no_text)
            yield from scanned_pages(str(path), scanned)
        found = split_passages(page.markdown, markdown=True, limit=chunk_bytes)
        for rec in passage_records(found, title, source, page.number):
            rec.meta[PASSAGE]["file_hash"] = digest
            if scanned:  # kept with the passages, so a re-ingest that does not convert still names them
                rec.meta[PASSAGE]["no_text_pages"] = scanned
            yield rec
    if scanned is None:  # no page with text came
        yield from scanned_pages(str(path), ",".join(no_text))


def scanned_pages(file: str, pages: str) -> Iterator[Rejection]:
    """A rejection for each page (of "2,5") that has no text layer; its line is 0, a page has no line."""
    for n in filter(None, pages.split(",")):
        yield Rejection(file, 0, f"page {n} has no text layer: OCR it first")


@dataclass(frozen=True)
class Skipped:
    """A file found but not stored, and why in a few words ("unsupported type", "encrypted")."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{Path(self.file).name} ({self.reason})"


def iter_files(paths: Iterable[str | Path], skipped: list[Skipped] | None = None) -> Iterator[Path]:
    """Files named, and files with a readable extension under folders named (recursively, sorted), each as its
    canonical path (absolute, symlinks resolved): the one name a file has as a record's source.

    Other files under a folder are added to `skipped` when given; hidden files and folders (a name starting
    with ".") and ingest's own `.rejected.jsonl` files are passed over silently."""
    for f in _iter_files(paths, skipped):
        yield Path(canonical(f))


def _iter_files(paths: Iterable[str | Path], skipped: list[Skipped] | None) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.name.endswith(".rejected.jsonl"):
                    continue
                if f.suffix.lower() in EXTENSIONS:
                    yield f
                elif skipped is not None:
                    skipped.append(Skipped(canonical(f), "unsupported type"))
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
    return f"{kind}, not a file: name a file ({', '.join(EXTENSIONS)}) or a folder of them"


def read_file(f: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Record | Rejection]:
    """Records and rejections of one file, its records' source the file's canonical path.

    A file that cannot be read (permissions, an I/O error) is a ReadError: nothing is written, nothing pruned."""
    suffix, source = f.suffix.lower(), canonical(f)
    try:
        if suffix == ".jsonl":
            yield from read_jsonl(f, source)
        elif suffix == ".json":
            yield from read_json(f, source)
        elif suffix in DOCUMENT_EXTENSIONS:
            yield from read_document(f, chunk_bytes, source)
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
