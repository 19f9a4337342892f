"""Retrieval datasets: BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and our held-out split.

Loading follows BEIR/MTEB: qrels grades are integers; only queries that appear in the qrels are evaluated.
Problems name the file and line. Ids in the qrels that the corpus or the queries lack are warnings (the
document stays in the qrels, so it counts against recall as it does in MTEB); `strict=True` makes them errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError
from ingest.bundled import seed_corpus
from ingest.readers import read_records
from ingest.records import HELDOUT, HELDOUT_FRACTION, heldout_flags

EMBED_FIELDS = ("title_text", "title", "text")
EMBED_ALIASES = {"both": "title_text", "title+text": "title_text", "prompt": "title", "response": "text"}
MAX_LISTED = 10


def unknown_embed(name: str) -> str:
    """The message for an embed field we do not know."""
    return f"unknown embed field {name!r}: use {', '.join(EMBED_FIELDS)} (or prompt, response, both)"


class BeirError(ShvayambhuError, ValueError):
    """A dataset that cannot be evaluated; the message names the file and line."""


@dataclass
class Doc:
    """One corpus document."""

    title: str
    text: str

    def embed_text(self, field_: str = "title_text") -> str:
        """What is embedded: `title_text` joins title and text by a space and strips it, as MTEB does."""
        f = EMBED_ALIASES.get(field_, field_)
        if f == "title_text":
            return f"{self.title} {self.text}".strip()
        if f == "title":
            return self.title or self.text
        if f == "text":
            return self.text
        raise BeirError(unknown_embed(field_))


@dataclass
class RetrievalDataset:
    """Documents, queries and graded judgements, ready to evaluate."""

    name: str
    corpus: dict[str, Doc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _warn(bucket: list[str], counts: dict[str, int], kind: str, msg: str) -> None:
    counts[kind] = counts.get(kind, 0) + 1
    if counts[kind] <= MAX_LISTED:
        bucket.append(msg)


def _read_jsonl(path: Path, what: str) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise BeirError(f"{path}: missing {what} file (BEIR: corpus.jsonl, queries.jsonl, qrels/)")
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise BeirError(f"{path}:{n}: undecodable bytes (not UTF-8) at byte {e.start}") from e
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise BeirError(f"{path}:{n}: invalid JSON: {e.msg} at column {e.colno}") from e
            if not isinstance(obj, dict):
                raise BeirError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def _id_of(obj: dict[str, Any], path: Path, n: int) -> str:
    raw = obj.get("_id", obj.get("id"))
    if raw is None or (isinstance(raw, str) and not raw.strip()) or isinstance(raw, (dict, list, bool)):
        raise BeirError(f"{path}:{n}: missing or empty '_id'")
    return str(raw)


def _text_of(obj: dict[str, Any], key: str, path: Path, n: int, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise BeirError(f"{path}:{n}: missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise BeirError(f"{path}:{n}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _grade(text: str, path: Path, n: int) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value == value and value.is_integer():
        return int(value)
    raise BeirError(f"{path}:{n}: relevance score {text!r} is not an integer (BEIR grades are integers)")


def read_qrels(path: Path) -> tuple[dict[str, dict[str, int]], list[str]]:
    """`query-id corpus-id score` lines (tab-separated; the header line is optional) -> qrels and warnings."""
    qrels: dict[str, dict[str, int]] = {}
    warnings: list[str] = []
    counts: dict[str, int] = {}
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise BeirError(f"{path}:{n}: undecodable bytes (not UTF-8) at byte {e.start}") from e
            if not line.strip():
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            if n == 1 and [c.strip().lower() for c in cols[:2]] == ["query-id", "corpus-id"]:
                continue
            if len(cols) != 3:
                raise BeirError(
                    f"{path}:{n}: want 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}"
                )
            qid, did = cols[0].strip(), cols[1].strip()
            if not qid or not did:
                raise BeirError(f"{path}:{n}: empty query-id or corpus-id")
            grade = _grade(cols[2].strip(), path, n)
            if did in qrels.get(qid, {}):
                msg = f"{path}:{n}: duplicate judgement of ({qid}, {did}); the last one counts"
                _warn(warnings, counts, "duplicate judgement", msg)
            qrels.setdefault(qid, {})[did] = grade
    for kind, c in counts.items():
        if c > MAX_LISTED:
            warnings.append(f"{path}: ... and {c - MAX_LISTED} more {kind} warnings")
    return qrels, warnings


def _splits(folder: Path) -> list[str]:
    q = folder / "qrels"
    return sorted(p.stem for p in q.glob("*.tsv")) if q.is_dir() else []


def load_beir(path: str | Path, split: str = "test", *, strict: bool = False) -> RetrievalDataset:
    """Load a BEIR folder; raises BeirError naming the file and line of whatever cannot be used."""
    folder = Path(path)
    if not folder.is_dir():
        raise BeirError(f"{folder}: no such folder (expected a BEIR dataset folder)")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = _splits(folder)
        hint = f"; this dataset has: {', '.join(have)}" if have else "; the folder has no qrels/*.tsv at all"
        raise BeirError(f"{qrels_path}: missing qrels for split {split!r}{hint}")

    corpus_path = folder / "corpus.jsonl"
    corpus: dict[str, Doc] = {}
    warnings: list[str] = []
    counts: dict[str, int] = {}
    for n, obj in _read_jsonl(corpus_path, "corpus"):
        did = _id_of(obj, corpus_path, n)
        if did in corpus:
            msg = f"{corpus_path}:{n}: duplicate _id {did!r}; the last one counts"
            _warn(warnings, counts, "duplicate corpus id", msg)
        title = _text_of(obj, "title", corpus_path, n, False)
        corpus[did] = Doc(title, _text_of(obj, "text", corpus_path, n, True))
    if not corpus:
        raise BeirError(f"{corpus_path}: the corpus is empty")

    queries_path = folder / "queries.jsonl"
    all_queries: dict[str, str] = {}
    for n, obj in _read_jsonl(queries_path, "queries"):
        all_queries[_id_of(obj, queries_path, n)] = _text_of(obj, "text", queries_path, n, True)

    qrels, qwarn = read_qrels(qrels_path)
    warnings += qwarn
    if not qrels:
        raise BeirError(f"{qrels_path}: no judgements")
    problems: list[str] = []
    line_of = _qrels_lines(qrels_path)
    for qid in list(qrels):
        if qid not in all_queries:
            where = f"{qrels_path}:{line_of.get((qid, None), '?')}"
            msg = f"{where}: query-id {qid!r} is not in {queries_path.name}"
            _warn(problems, counts, "unknown query id", msg + "; the query is skipped")
            del qrels[qid]
            continue
        for did in qrels[qid]:
            if did not in corpus:
                where = f"{qrels_path}:{line_of.get((qid, did), '?')}"
                msg = f"{where}: corpus-id {did!r} is not in {corpus_path.name}"
                _warn(problems, counts, "unknown corpus id", msg + "; it stays relevant, cannot be retrieved")
    for kind in ("unknown query id", "unknown corpus id"):
        if counts.get(kind, 0) > MAX_LISTED:
            problems.append(f"{qrels_path}: ... and {counts[kind] - MAX_LISTED} more {kind} lines")
    if strict and problems:
        raise BeirError("\n".join(problems))
    warnings += problems
    if not qrels:
        raise BeirError(f"{qrels_path}: none of the judged query ids is in {queries_path.name}")
    queries = {q: all_queries[q] for q in all_queries if q in qrels}
    info = {
        "unknown_query_ids": counts.get("unknown query id", 0),
        "unknown_corpus_ids": counts.get("unknown corpus id", 0),
        "queries_in_file": len(all_queries),
    }
    return RetrievalDataset(folder.name, corpus, queries, qrels, split, warnings, info)


def _qrels_lines(path: Path) -> dict[tuple[str, str | None], int]:
    """(qid, docid) and (qid, None) -> the line number where it first appears, for messages."""
    out: dict[tuple[str, str | None], int] = {}
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            cols = raw.decode("utf-8", "replace").strip().split("\t")
            if len(cols) >= 2:
                out.setdefault((cols[0].strip(), cols[1].strip()), n)
                out.setdefault((cols[0].strip(), None), n)
    return out


# ---- our corpus --------------------------------------------------------------------------------------


def split_heldout(records: Sequence[Any], fraction: float = HELDOUT_FRACTION) -> tuple[list[Any], list[Any], str]:
    """(rest, held_out, rule) of ingest Records by the one held-out rule that training uses too."""
    flags, rule = heldout_flags(records, fraction)
    rest = [r for r, held in zip(records, flags, strict=True) if not held]
    return rest, [r for r, held in zip(records, flags, strict=True) if held], rule


def load_records(paths: Sequence[str | Path] | None = None) -> list[Any]:
    """Parsable ingest Records of `paths` (default: the bundled corpus), each content id once."""

    seen: dict[str, Any] = {}
    for r in read_records(list(paths or seed_corpus())):
        seen.setdefault(r.id, r)
    return list(seen.values())


def heldout_dataset(paths: Sequence[str | Path] | None = None, fraction: float = HELDOUT_FRACTION) -> RetrievalDataset:
    """Our corpus as a retrieval task: every record is a document (title = prompt, text = response) and each
    held-out prompt is a query whose one relevant document is its own record."""
    records = load_records(paths)
    if not records:
        raise BeirError(f"no records in {', '.join(map(str, paths or seed_corpus()))}")
    _, held, rule = split_heldout(records, fraction)
    if not held:
        raise BeirError(f"no held-out records ({rule})")
    corpus = {r.id: Doc(r.prompt, r.response) for r in records}
    queries = {f"q-{r.id}": r.prompt for r in held}
    qrels = {f"q-{r.id}": {r.id: 1} for r in held}
    return RetrievalDataset("corpus-heldout", corpus, queries, qrels, HELDOUT, [], {"rule": rule})
