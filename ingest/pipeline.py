"""Ingest: read, validate, embed what is new, write to Chroma in batches; safe to kill and run again."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.chroma_compat import max_batch_size
from index.embed import Embedder
from index.embed_process import MIN_TEXTS, EmbedProcess
from index.errors import ShvayambhuError
from index.lexical import LexicalStore
from index.lock import store_write_lock
from index.progress import progress_bar
from index.store import check_write_precision, translating
from ingest.documents import DOCUMENT_EXTENSIONS, Unreadable, file_hash
from ingest.embed_ahead import EmbedAhead
from ingest.readers import CHUNK_BYTES, PASSAGE, Skipped, iter_files, read_file, scanned_pages
from ingest.records import Record, content_hash
from ingest.sources import canonical, relative_sources, spellings
from ingest.validate import Rejection, check_record

EMBED_FIELDS = ("prompt", "response", "both")
WRITE_CHUNK = 512  # records per Chroma request (a disk that fills mid-write left 1,000-record writes unreadable)
WRITE_QUEUE = 2  # chunks embedded ahead of the writer: bounds memory, keeps the embedder busy
Write = Callable[[int, Any], None]  # write(chunk number, its vectors)


class IngestError(ShvayambhuError, RuntimeError):
    """Ingest refused to write anything (e.g. `--strict` and a rejected record); `summary` says what it found."""

    def __init__(self, message: str, summary: IngestSummary | None = None):
        super().__init__(message)
        self.summary = summary


@dataclass
class IngestSummary:
    """What an ingest did; `rejections` name the file and line of every record left out."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    removed: int = 0
    repaired: int = 0
    seconds: float = 0.0
    rejections: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # files found but not stored, each with why

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (`--json`), rejections as {file, line, reason}, skipped files as {file, reason}."""
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d

    def skipped_line(self) -> str:
        """`skipped 2: a.xyz (unsupported type), b.pdf (encrypted)`, or "" when nothing was skipped."""
        if not self.skipped:
            return ""
        return f"skipped {len(self.skipped)}: " + ", ".join(map(str, self.skipped))


# A passage's place, stored as top-level metadata; a document's passages also carry the digest of its bytes and
# the pages it has without a text layer.
PASSAGE_FIELDS = ("heading", "page", "start", "end", "file_hash", "no_text_pages")


def slot_key(rec: Record) -> str:
    """What an edit replaces: a record's slot (its source and prompt), or for a passage its whole file, so an
    edited file's old passages give way to its new ones."""
    return content_hash(rec.source, "\0passages") if PASSAGE in rec.meta else rec.key


def flatten_meta(rec: Record, embed_field: str) -> dict[str, Any]:
    """Chroma metadata: scalar values only, nested `meta` flattened to `meta.a.b` keys, None dropped."""
    out: dict[str, Any] = {
        "prompt": rec.prompt,
        "response": rec.response,
        "source": rec.source,
        "line": rec.line,
        "bytes": len(rec.response.encode("utf-8")),
        "hash": rec.id,
        "key": slot_key(rec),
        "kind": rec.kind,
        "embed_field": "both" if rec.kind == "text" else embed_field,
    }
    for name in ("category", "model", "split"):
        if getattr(rec, name):
            out[name] = getattr(rec, name)
    place = rec.meta.get(PASSAGE) if isinstance(rec.meta.get(PASSAGE), dict) else {}
    out.update({k: place[k] for k in PASSAGE_FIELDS if isinstance(place.get(k), str | int) and place[k] != ""})

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, bool | int | float | str):
            out[prefix] = value
        elif value is not None:
            import json

            out[prefix] = json.dumps(value, ensure_ascii=False, sort_keys=True)

    walk("meta", {k: v for k, v in rec.meta.items() if k != PASSAGE} if place else rec.meta)
    return out


def collect(
    paths: Iterable[str | Path],
    chunk_bytes: int = CHUNK_BYTES,
    warnings: list[str] | None = None,
    skipped: list[Skipped] | None = None,
    stored: Any | None = None,
    ahead: Callable[[Record], None] | None = None,
    **limits: int,
) -> tuple[list[Record], list[Rejection]]:
    """Read and validate every path; duplicates (same content id) are kept once, the first one seen.

    A file that holds no records at all adds a line to `warnings` when given; files found but not read
    (an unsupported type, an encrypted or text-less document) go to `skipped` when given, else raise. A document
    whose every passage in the `stored` collection came from the same bytes is taken from there, not converted;
    the passages of each document converted are given to `ahead` as they come (ingest.embed_ahead)."""
    records: dict[str, Record] = {}
    rejections: list[Rejection] = []
    for f in iter_files(paths, skipped):
        seen, found, refused = 0, [], []  # a file's records count once all of it is read
        try:
            known = stored_passages(stored, f) if stored is not None else []
            converted = not known and f.suffix.lower() in DOCUMENT_EXTENSIONS
            for item in known or read_file(f, chunk_bytes):
                seen += 1
                if isinstance(item, Rejection):
                    refused.append(item)
                    continue
                reason = check_record(item, **limits)
                if reason:
                    refused.append(Rejection(str(f), item.line, reason))
                    continue
                found.append(item)
                if ahead is not None and converted:
                    ahead(item)
        except Unreadable as e:
            if skipped is None:
                raise
            skipped.append(Skipped(str(f), e.reason))
            continue
        rejections.extend(refused)
        for item in found:
            records.setdefault(item.id, item)
        if not seen and warnings is not None:
            warnings.append(f"{f}: held no records (an empty file)")
    return list(records.values()), rejections


def stored_passages(collection: Any, f: Path) -> list[Record | Rejection]:
    """The passages of document `f` as stored (and its scanned pages), when all came from its present bytes; else
    []."""
    if f.suffix.lower() not in DOCUMENT_EXTENSIONS:
        return []
    got = collection.get(where={"source": str(f)}, include=["metadatas"])
    metas = [m or {} for m in got["metadatas"]]
    digest = file_hash(f)
    if not metas or any(m.get("file_hash") != digest for m in metas):
        return []
    out = []
    for m in metas:
        place = {k: m[k] for k in PASSAGE_FIELDS if k in m}
        place.setdefault("heading", "")
        line = int(m.get("line", 0))
        out.append(
            Record(str(m["prompt"]), str(m["response"]), source=str(f), line=line, kind="text", meta={PASSAGE: place})
        )
    out.sort(key=lambda r: (r.meta[PASSAGE].get("page", 0), r.meta[PASSAGE].get("start", 0)))
    return [*scanned_pages(str(f), str(metas[0].get("no_text_pages", ""))), *out]


def _existing(collection: Any, ids: list[str], batch: int) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), batch):
        found.update(collection.get(ids=ids[i : i + batch], include=[])["ids"])
    return found


def _by_source(collection: Any, sources: set[str]) -> dict[str, dict[str, Any]]:
    """id -> metadata of every stored record that came from one of `sources`."""
    out: dict[str, dict[str, Any]] = {}
    for src in sorted(sources):
        got = collection.get(where={"source": src}, include=["metadatas"])
        for id_, meta in zip(got["ids"], got["metadatas"], strict=True):
            out[id_] = dict(meta or {})
    return out


def _old_chunks(records: list[Record], stored: dict[str, dict[str, Any]], new_ids: set[str]) -> set[str]:
    """Text chunks an older version stored for files now read as passages (no span): the passages replace them."""
    files = {r.source for r in records if PASSAGE in r.meta}
    return {
        i
        for i, meta in stored.items()
        if i not in new_ids and meta.get("source") in files and meta.get("kind") == "text" and "start" not in meta
    }


def _moved(records: list[Record], stored: dict[str, dict[str, Any]], embed_field: str) -> list[Record]:
    """Stored passages whose text is unchanged but whose place (line, heading, page, span) moved in an edit."""
    out = []
    for r in records:
        old = stored.get(r.id)
        if old is None or PASSAGE not in r.meta:
            continue
        new = flatten_meta(r, embed_field)
        if any(old.get(k) != new.get(k) for k in ("line", "source", *PASSAGE_FIELDS)):
            out.append(r)
    return out


def ingest_records(
    records: list[Record],
    collection: Any,
    embedder: Embedder | Callable[[], Embedder],
    *,
    embed_field: str = "prompt",
    prune: bool = False,
    sources: set[str] | None = None,
    progress: bool | None = None,
    embed_batch: int = 64,
    summary: IngestSummary | None = None,
    lexical: LexicalStore | None = None,
    ahead: EmbedAhead | None = None,
) -> IngestSummary:
    """Write `records` into `collection`: new ones embedded and added, edited ones replaced, stale ones pruned.
    Vectors `ahead` embedded while the documents were converted are written as they are.

    New vectors are written before any old one is deleted, so a run killed at any point leaves every record
    either in its old or its new version, and the next run finishes the job. A `lexical` index is marked stale
    before the collection changes and rebuilt from it at the end (also when a killed run left it stale).
    """
    if embed_field not in EMBED_FIELDS:
        raise IngestError(f"embed field must be one of {', '.join(EMBED_FIELDS)}, not {embed_field!r}")
    start = time.perf_counter()
    summary = summary or IngestSummary()
    batch = max(1, min(max_batch_size(collection), 1000))
    sources = sources if sources is not None else {r.source for r in records}
    new_ids = {r.id for r in records}
    present = _existing(collection, list(new_ids), batch)
    stored = _by_source(collection, sources)
    new_keys = {slot_key(r) for r in records}
    stale = {i for i, meta in stored.items() if i not in new_ids and meta.get("key", "") in new_keys}
    stale |= _old_chunks(records, stored, new_ids)
    pruned = {i for i in stored if i not in new_ids and i not in stale} if prune else set()
    todo = [r for r in records if r.id not in present]
    replaced_keys = {stored[i].get("key", "") for i in stale}
    summary.updated += sum(1 for r in todo if slot_key(r) in replaced_keys)
    summary.added += len(todo) - sum(1 for r in todo if slot_key(r) in replaced_keys)
    summary.unchanged += len(records) - len(todo)
    moved = _moved([r for r in records if r.id in present], stored, embed_field)
    for i in range(0, len(moved), batch):  # metadata only: the text, so the vector, is the same
        part = moved[i : i + batch]
        collection.update(ids=[r.id for r in part], metadatas=[flatten_meta(r, embed_field) for r in part])

    if lexical is not None and (todo or stale or pruned):
        lexical.mark_dirty()
    ready = ahead.finish() if ahead is not None else {}
    if todo:
        model = ahead.model if ahead is not None and ahead.model is not None else embedder
        model = model if isinstance(model, Embedder) else model()
        check_write_precision(collection, getattr(model, "precision", "fp32"))
        done = [r for r in todo if r.embed_text(embed_field) in ready]
        for i in range(0, len(done), batch):
            part = done[i : i + batch]
            texts = [r.embed_text(embed_field) for r in part]
            collection.upsert(
                ids=[r.id for r in part],
                embeddings=np.stack([ready[t] for t in texts]),
                documents=texts,
                metadatas=[flatten_meta(r, embed_field) for r in part],
            )
        rest = [r for r in todo if r.embed_text(embed_field) not in ready]
        rest.sort(key=lambda r: len(r.embed_text(embed_field)))  # similar lengths pad less
        show = sys.stderr.isatty() if progress is None else progress
        if rest:
            _write(collection, model, rest, embed_field, batch, embed_batch, show)
    doomed = sorted(stale | pruned)
    for i in range(0, len(doomed), batch):
        collection.delete(ids=doomed[i : i + batch])
    summary.removed += len(pruned)
    if lexical is not None and (todo or doomed):
        lexical.update(collection, set(doomed), [(r.id, r.embed_text(embed_field)) for r in todo])
    elif lexical is not None:
        lexical.index(collection, verify=True)
    summary.seconds += time.perf_counter() - start
    return summary


def _write(
    collection: Any,
    model: Embedder,
    todo: list[Record],
    embed_field: str,
    batch: int,
    embed_batch: int,
    show: bool,
) -> None:
    """Embed `todo` and upsert it in chunks of at most WRITE_CHUNK, embedding and writing at the same time: a long
    ingest on ONNX Runtime embeds in a child process (Chroma's writes hold this process's GIL), anything else
    embeds on this thread while a writer thread upserts."""
    step = max(1, min(batch, WRITE_CHUNK))
    parts = [todo[i : i + step] for i in range(0, len(todo), step)]
    texts = [[r.embed_text(embed_field) for r in part] for part in parts]
    with progress_bar(show, "embedding") as bar:
        task = bar.add_task("embed", total=len(todo))

        def write(i: int, vectors: Any) -> None:
            collection.upsert(
                ids=[r.id for r in parts[i]],
                embeddings=vectors,
                documents=texts[i],
                metadatas=[flatten_meta(r, embed_field) for r in parts[i]],
            )
            bar.advance(task, len(parts[i]))

        beside = _write_beside_process if model.runtime == "onnx" and len(todo) >= MIN_TEXTS else _write_beside_thread
        beside(model, texts, embed_batch, write)


def _write_beside_process(model: Embedder, texts: list[list[str]], embed_batch: int, write: Write) -> None:
    """WRITE_QUEUE chunks queued in the embedding process while this thread writes the one before them."""
    with EmbedProcess(model) as child:
        for chunk in texts[:WRITE_QUEUE]:
            child.submit(chunk, embed_batch)
        for i in range(len(texts)):
            vectors = child.result()
            if i + WRITE_QUEUE < len(texts):
                child.submit(texts[i + WRITE_QUEUE], embed_batch)
            write(i, vectors)


def _write_beside_thread(model: Embedder, texts: list[list[str]], embed_batch: int, write: Write) -> None:
    """Embed on this thread while a writer thread writes finished chunks from a bounded queue (ONNX Runtime
    releases the GIL); the first failed write stops the embedding and is raised here."""
    chunks: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
    failed: list[BaseException] = []

    def writer() -> None:
        while (item := chunks.get()) is not None:
            if failed:
                continue  # drain, so the producer never blocks on a dead writer
            try:
                write(*item)
            except BaseException as e:  # re-raised on the calling thread
                failed.append(e)

    thread = threading.Thread(target=writer, name="chroma-writer", daemon=True)
    thread.start()
    try:
        for i, chunk in enumerate(texts):
            if failed:
                break
            chunks.put((i, model.embed(chunk, batch_size=embed_batch)))
    finally:
        chunks.put(None)
        thread.join()
    if failed:
        raise failed[0]


def ingest_paths(
    paths: Iterable[str | Path],
    collection: Any | Callable[[], Any],
    embedder: Embedder | Callable[[], Embedder],
    *,
    embed_field: str = "prompt",
    prune: bool = False,
    strict: bool = False,
    progress: bool | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    wait: bool = True,
    verify: bool = False,
    lexical: LexicalStore | Callable[[Any], LexicalStore] | None = None,
) -> IngestSummary:
    """Ingest files and folders under the store's write lock; with `strict`, any rejection raises IngestError.

    `collection` may be a factory, called only once the input passed `strict`, so a failed strict run
    creates nothing. `wait=False` (`--no-wait`) fails at once when another process is writing. `verify`
    (`--verify`) also re-embeds records of these files that are stored without a readable vector."""
    start = time.perf_counter()
    paths = list(paths)
    summary = IngestSummary()
    stored = None
    if not strict:  # a strict run opens (so creates) the collection only once its input passed
        with translating(collection):
            stored = collection = collection if hasattr(collection, "upsert") else collection()
    ahead = EmbedAhead(stored, embedder, embed_field) if stored is not None else None
    records, rejections = collect(
        paths,
        chunk_bytes,
        warnings=summary.warnings,
        skipped=summary.skipped,
        stored=stored,
        ahead=ahead.offer if ahead is not None else None,
    )
    summary.rejected, summary.rejections = len(rejections), rejections
    if strict and rejections:
        shown = "\n".join(f"  {r}" for r in rejections[:20])
        more = f"\n  ... and {len(rejections) - 20} more" if len(rejections) > 20 else ""
        raise IngestError(f"--strict: {len(rejections)} record(s) rejected, nothing written:\n{shown}{more}", summary)
    unread = {s.file for s in summary.skipped}  # a file not read this time keeps what it stored (no prune)
    sources = {canonical(f) for f in iter_files(paths)} - unread
    with translating(collection):
        col = collection if hasattr(collection, "upsert") else collection()
    with store_write_lock(col, "ingest", wait=wait), translating(col):
        old = relative_sources(col, spellings(sources, paths))
        if old:
            summary.warnings.append(
                f"the store holds {sum(old.values())} record(s) whose source is a relative path (from an older "
                "version; prune and edits cannot reach them): run `shvayambhu doctor --migrate-sources DIR` "
                "with DIR the folder they were ingested from"
            )
        ingest_records(
            records,
            col,
            embedder,
            embed_field=embed_field,
            prune=prune,
            sources=sources,
            progress=progress,
            summary=summary,
            lexical=lexical(col) if callable(lexical) else lexical,
            ahead=ahead,
        )
        if verify:
            summary.repaired = _repair_lost(col, records, embedder)
    summary.seconds = time.perf_counter() - start
    return summary


def _repair_lost(collection: Any, records: list[Record], embedder: Embedder | Callable[[], Embedder]) -> int:
    """Re-embed, from their stored documents, the records among `records` whose vector cannot be read."""
    from index.doctor import check, repair  # only a verifying run needs it

    ids = [r.id for r in records]
    lost = [i for n in range(0, len(ids), 1000) for i in check(collection, ids[n : n + 1000])]
    if not lost:
        return 0
    return repair(collection, embedder if isinstance(embedder, Embedder) else embedder(), lost)
