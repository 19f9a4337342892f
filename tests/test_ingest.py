"""Ingest: every reader, every rejection reason, idempotence, edits, prune, strict, kill -9 and re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import IngestError, collect, flatten_meta, ingest_paths
from ingest.readers import ReadError, read_path
from ingest.records import Record
from ingest.validate import Rejection, check_record

GOOD = "Sleep comes easier with a fixed wake-up time, a dark cool room and no screens in the last hour."


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def records_and_rejections(path: Path) -> tuple[list[Record], list[Rejection]]:
    items = list(read_path(path))
    return [r for r in items if isinstance(r, Record)], [r for r in items if isinstance(r, Rejection)]


def test_readers_accept_every_shape(tmp_path: Path) -> None:
    jsonl = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {
                "prompt": "How do I sleep better?",
                "response": GOOD,
                "category": "advice",
                "meta": {"k": {"n": 1}},
            },
            {
                "instruction": "Summarise",
                "input": "The cat sat.",
                "output": "A cat was sitting down quietly.",
            },
            {
                "instruction": "Name a colour",
                "context": "",
                "response": "Blue is a colour.",
                "category": "open_qa",
            },
            {
                "messages": [
                    {"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "Hi there?"},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "What is 2+2?"},
                    {"role": "assistant", "content": "It is 4."},
                ]
            },
        ],
    )
    recs, rej = records_and_rejections(jsonl)
    assert not rej
    assert [r.prompt for r in recs] == [
        "How do I sleep better?",
        "Summarise\n\nThe cat sat.",
        "Name a colour",
        "Hi there?",
        "What is 2+2?",
    ]
    assert recs[0].category == "advice" and recs[0].meta == {"k": {"n": 1}} and recs[0].line == 1
    assert recs[2].response == "Blue is a colour." and recs[2].category == "open_qa"
    assert recs[4].response == "It is 4." and recs[4].line == 4 and recs[4].meta["turn"] == 1

    arr = tmp_path / "b.json"
    arr.write_text(
        json.dumps([{"prompt": "p one?", "response": GOOD}, {"prompt": "p two?", "response": GOOD + "!"}], indent=2),
        encoding="utf-8",
    )
    recs, rej = records_and_rejections(arr)
    assert [r.prompt for r in recs] == ["p one?", "p two?"] and recs[1].line > recs[0].line > 1

    md = tmp_path / "notes.md"
    md.write_text(
        "# Title\n\nFirst paragraph here.\n\nSecond one.\n\n## Section B\n\n"
        + ("word " * 400)
        + "\n\n"
        + ("more " * 400)
        + "\n",
        encoding="utf-8",
    )
    recs, _ = records_and_rejections(md)
    assert recs[0].prompt == "notes: Title" and "First paragraph" in recs[0].response and "Second" in recs[0].response
    assert all(r.kind == "text" for r in recs) and {r.prompt for r in recs[1:]} == {"notes: Title > Section B"}
    assert len(recs) >= 5 and all(len(r.response.encode()) <= 1000 for r in recs)  # passages under the size limit
    assert recs[1].meta["passage"]["heading"] == "Title > Section B" and recs[1].line == 9
    txt = tmp_path / "plain.txt"
    txt.write_text("one\ntwo\n\nthree\n", encoding="utf-8")
    recs, _ = records_and_rejections(txt)
    assert [r.response for r in recs] == ["one\ntwo\n\nthree"] and recs[0].line == 1


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "Q?", "response": ""}, "empty or whitespace"),
        ({"prompt": "Q?", "response": "   \n\t "}, "empty or whitespace"),
        ({"prompt": "", "response": GOOD}, "empty prompt"),
        ({"prompt": "Q?", "response": "Here it is: {response}"}, "template variable"),
        ({"prompt": "Q?", "response": "<placeholder>"}, "placeholder tag"),
        ({"prompt": "Q?", "response": "Dear [INSERT NAME], thanks."}, "bracketed fill-in"),
        ({"prompt": "Q?", "response": "TODO write the answer later"}, "TODO"),
        ({"prompt": "Q?", "response": "Lorem ipsum dolor sit amet, consectetur."}, "Lorem ipsum"),
        (
            {"prompt": "What is the capital of France?", "response": "What is the capital of France?"},
            "echoes",
        ),
        ({"prompt": "What is the capital of France?", "response": "what is the capital of france"}, "echoes"),
        ({"prompt": "Q?", "response": "x" * 40000}, "oversize"),
        ({"prompt": "Q?"}, "missing field 'response'"),
        ({"prompt": "Q?", "response": 42}, "must be a string"),
        ({"question": "Q?", "answer": "A"}, "unknown record shape"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"prompt": "Q?", "response": GOOD, "kind": "chunk"}, "field 'kind' must be"),
    ],
)
def test_every_rejection_names_file_line_and_reason(tmp_path: Path, row, reason: str) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Fine?", "response": GOOD}, row])
    records, rejections = collect([path])
    assert len(records) == 1 and len(rejections) == 1
    assert rejections[0].file == str(path) and rejections[0].line == 2
    assert reason in rejections[0].reason


def test_undecodable_bytes_rejected_with_line_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "Fine?", "response": GOOD}).encode()
    path.write_bytes(
        good + b"\n" + b'{"prompt": "x\xff\xfe", "response": "y"}\n' + good.replace(b"Fine", b"Okay") + b"\n"
    )
    records, rejections = collect([path])
    assert len(records) == 2
    assert [(r.line, "undecodable" in r.reason) for r in rejections] == [(2, True)]


def test_jsonl_kind_text_is_a_titled_passage_embedded_whole(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Bikes", "response": GOOD, "kind": "text"}])
    records, rejections = collect([path])
    assert not rejections and records[0].kind == "text"
    assert records[0].embed_text("prompt") == f"Bikes\n{GOOD}"


def test_valid_text_is_not_rejected() -> None:
    ok = Record("How do I format a dict in Python?", "Use json.dumps(d, indent=2); a set looks like {1, 2}.")
    assert check_record(ok) is None
    assert check_record(Record("Plan my day", "Start with your todo list, then block two hours for focus.")) is None


def test_flatten_meta_is_chroma_safe() -> None:
    rec = Record("Q?", GOOD, model="m", category="c", meta={"a": {"b": 1}, "l": [1, 2], "n": None}, source="s", line=3)
    meta = flatten_meta(rec, "prompt")
    assert meta["meta.a.b"] == 1 and meta["meta.l"] == "[1, 2]" and "meta.n" not in meta
    assert meta["bytes"] == len(GOOD.encode()) and meta["hash"] == rec.id and meta["line"] == 3
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())


def snapshot(col) -> dict[str, tuple]:
    got = col.get(include=["metadatas", "documents"])
    return {
        i: (d, m["hash"], m["source"], m["line"])
        for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
    }


def test_reingest_is_idempotent_edit_replaces_prune_removes(tmp_path: Path, make_collection, embedder) -> None:
    rows = [{"prompt": f"Question {i}: how do plants grow?", "response": f"{GOOD} Variant {i}."} for i in range(6)]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)
    col = make_collection()
    s1 = ingest_paths([path], col, embedder, progress=False)
    assert (s1.added, s1.updated, s1.unchanged) == (6, 0, 0) and col.count() == 6
    before = snapshot(col)
    s2 = ingest_paths([path], col, embedder, progress=False)
    assert (s2.added, s2.updated, s2.unchanged, s2.removed) == (0, 0, 6, 0) and snapshot(col) == before

    rows[2]["response"] = "An edited answer about how plants grow from seeds using light and water."
    del rows[5]
    write_jsonl(path, rows)
    s3 = ingest_paths([path], col, embedder, progress=False)
    assert (s3.added, s3.updated, s3.unchanged, s3.removed) == (0, 1, 4, 0)
    assert col.count() == 6  # the deleted row stays without --prune
    responses = {m["response"] for m in col.get(include=["metadatas"])["metadatas"]}
    assert rows[2]["response"] in responses and f"{GOOD} Variant 2." not in responses
    s4 = ingest_paths([path], col, embedder, prune=True, progress=False)
    assert (s4.removed, col.count()) == (1, 5)


def test_strict_writes_nothing(tmp_path: Path, make_collection, embedder) -> None:
    path = write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": "Q?", "response": GOOD}, {"prompt": "Q2?", "response": "TODO"}]
    )
    col = make_collection()
    with pytest.raises(IngestError, match=r"s\.jsonl:2: placeholder"):
        ingest_paths([path], col, embedder, strict=True, progress=False)
    assert col.count() == 0


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="no such file"):
        list(read_path(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ReadError, match="cannot read .csv"):
        list(read_path(tmp_path / "x.csv"))


def synthetic_corpus(path: Path, n: int) -> Path:
    topics = ["rivers", "stars", "bread", "music", "chess", "rain", "bees", "glass", "maps", "ink"]
    rows = [
        {
            "prompt": f"Tell me fact {i} about {topics[i % 10]}.",
            "response": f"Fact {i}: {topics[i % 10]} have a long history; record {i * 7919 % 10007} of the set.",
            "category": topics[i % 10],
        }
        for i in range(n)
    ]
    return write_jsonl(path, rows)


def cli(data_dir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "SHVAYAMBHU_HOME": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], env=env, capture_output=True, text=True, **kw)


PAUSING_INGEST = """
import sys, time
from pathlib import Path
from index.embed import load_embedder
from index.store import get_collection, open_client
from ingest.pipeline import ingest_paths

corpus, home, marker = sys.argv[1:4]


class Pausing:
    # The real collection; at its second write (the first one done, more embedded) it says so and waits.
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert(self, **kw):
        self.calls += 1
        if self.calls == 2:
            Path(marker).touch()
            time.sleep(600)
        return self.inner.upsert(**kw)


emb = load_embedder()
col = get_collection(open_client(Path(home)), "corpus", model=emb.name, dim=emb.dim, embed_field="prompt")
ingest_paths([corpus], Pausing(col), emb, progress=False)
"""


def child_pids(pid: int) -> set[int]:
    return {int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()}


def running_python(pid: int) -> bool:
    """A live process running Python (a zombie has an empty command line)."""
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.slow
def test_kill_9_mid_ingest_then_rerun_matches_uninterrupted(tmp_path: Path, embedder) -> None:
    """3,000 records take the path that embeds in a child process: killed mid-ingest, the child goes too, and
    a re-run makes the store equal to an uninterrupted one."""
    from index.store import get_collection, open_client
    from tests.waiting import wait_while_alive

    corpus = synthetic_corpus(tmp_path / "big.jsonl", 3000)
    killed, clean, marker = tmp_path / "killed", tmp_path / "clean", tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSING_INGEST, str(corpus), str(killed), str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # the ingest cannot finish: it pauses mid-ingest until killed
        wait_while_alive(proc, marker.exists, "the ingest to pause mid-ingest", timeout=600)
        embedding = child_pids(proc.pid)
        assert embedding, "a 3,000-record ingest embeds in a child process"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while any(running_python(p) for p in embedding):
        assert time.monotonic() < deadline, "the embedding process outlived its killed parent"
        time.sleep(0.1)
    partial = get_collection(open_client(killed), "corpus", model=embedder.name, dim=None, create=False).count()
    assert 0 < partial < 3000  # killed mid-ingest: some but not all of it written
    assert cli(killed, "ingest", str(corpus)).returncode == 0
    assert cli(clean, "ingest", str(corpus)).returncode == 0
    a = get_collection(open_client(killed), "corpus", model=embedder.name, dim=None, create=False)
    b = get_collection(open_client(clean), "corpus", model=embedder.name, dim=None, create=False)
    assert a.count() == b.count() == 3000
    assert snapshot(a) == snapshot(b)
