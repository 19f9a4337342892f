"""Faults on the store/ingest side: concurrent writers, source paths, damaged stores, backup/restore, one-line
errors, bad bytes. Real Chroma and the real embedding model; other processes are real subprocesses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from index.doctor import check, repair
from index.errors import ShvayambhuError, UsageError
from index.lock import StoreBusy, data_dir_of, write_lock
from index.retrieve import search
from index.store import StoreDamaged, StoreError, get_collection, open_client
from ingest.pipeline import IngestError, collect, ingest_paths
from ingest.readers import ReadError, read_path
from ingest.records import Record
from ingest.sources import migrate_sources
from ingest.validate import check_record

REPO = Path(__file__).resolve().parent.parent
GOOD = "A careful, specific answer that says something real about the question asked."


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def corpus(path: Path, start: int, n: int, variant: str = "") -> Path:
    rows = [
        {
            "prompt": f"Question {i} about subject {i % 23}?",
            "response": f"Answer {i}{variant}: fact {i * 7919 % 10007}.",
        }
        for i in range(start, start + n)
    ]
    return write_jsonl(path, rows)


def run_py(code: str, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True, cwd=REPO, **kw)


def fresh_state(data_dir: Path) -> dict:
    """Ids, documents and unreadable-vector ids of the corpus, read by a new process (no cached index)."""
    code = """
        import json, sys
        from index.store import open_client
        from index.doctor import check
        col = open_client(sys.argv[1]).get_collection("corpus")
        got = col.get(include=["documents", "embeddings"] if not check(col) else ["documents"])
        hits = 0
        if "embeddings" in got and got["embeddings"] is not None:
            for i, e in list(zip(got["ids"], got["embeddings"]))[::25]:
                hits += col.query(query_embeddings=[list(e)], n_results=1)["ids"][0][0] == i
        print(json.dumps({"docs": dict(zip(got["ids"], got["documents"])), "bad": check(col), "self": hits,
                          "probed": len(got["ids"][::25])}))
    """
    p = run_py(code, str(data_dir), stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0
    return json.loads(out)


WORKER = """
    import os, sys, time
    from index.embed import load_embedder
    from index.store import open_client, get_collection
    from ingest.pipeline import ingest_paths
    data, path, gate = sys.argv[1:4]
    e = load_embedder()
    col = get_collection(open_client(data), "corpus", model=e.name, dim=e.dim)
    col.query(query_embeddings=[e.embed_query("warm").tolist()], n_results=1)  # loads the vector index
    open(gate + "." + str(os.getpid()), "w").close()
    while not os.path.exists(gate):
        time.sleep(0.05)
    if os.environ.get("RAW"):  # what an unlocked writer does: upsert straight into Chroma
        from ingest.pipeline import collect, flatten_meta
        recs, _ = collect([path])
        col.upsert(ids=[r.id for r in recs], embeddings=e.embed([r.prompt for r in recs]).tolist(),
                   documents=[r.prompt for r in recs], metadatas=[flatten_meta(r, "prompt") for r in recs])
    else:
        ingest_paths([path], col, e, progress=False)
"""


def small_sync_store(data: Path, embedder):
    """A corpus collection whose vector index is written to disk every 20 records (Chroma's default: 1,000),
    so that a test-sized run exercises what a large one does."""
    client = open_client(data)
    client.create_collection(
        "corpus",
        embedding_function=None,
        metadata={"embedding_model": embedder.name, "embedding_dim": embedder.dim, "embed_field": "prompt"},
        configuration={"hnsw": {"space": "cosine", "sync_threshold": 20, "batch_size": 20}},
    )
    return get_collection(client, "corpus", model=embedder.name, dim=embedder.dim)


def concurrent_writers(data: Path, files: list[Path], gate: Path, raw: bool = False) -> list[str]:
    """Start one writer per file, each with the index already loaded, and release them together."""
    env = {"RAW": "1"} if raw else {}
    procs = [run_py(WORKER, str(data), str(f), str(gate), stderr=subprocess.PIPE, env=env) for f in files]
    while len(list(gate.parent.glob(gate.name + ".*"))) < len(procs):  # every writer has its index loaded
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    gate.touch()
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), errs
    return errs


@pytest.mark.slow
def test_concurrent_ingests_equal_a_sequential_run(tmp_path: Path, embedder) -> None:
    base = corpus(tmp_path / "base.jsonl", 0, 60)
    files = [corpus(tmp_path / f"c{k}.jsonl", 40 + 150 * k, 200) for k in range(3)]  # overlapping ranges
    together, alone = tmp_path / "together", tmp_path / "alone"
    for d in (together, alone):
        col = small_sync_store(d, embedder)
        ingest_paths([base], col, embedder, progress=False)
    ingest_paths(files, col, embedder, progress=False)  # `alone`: one process, in order
    errs = concurrent_writers(together, files, tmp_path / "gate")
    assert any("waiting for another writer (pid" in e for e in errs)
    got, want = fresh_state(together), fresh_state(alone)
    assert got["docs"] == want["docs"] and len(got["docs"]) == 540  # questions 0..539
    assert got["bad"] == [] and got["self"] == got["probed"]


@pytest.mark.slow
def test_doctor_finds_and_repairs_vectors_lost_by_unlocked_writers(tmp_path: Path, embedder) -> None:
    data = tmp_path / "d"
    col = small_sync_store(data, embedder)
    ingest_paths([corpus(tmp_path / "base.jsonl", 0, 50)], col, embedder, progress=False)
    files = [corpus(tmp_path / f"r{k}.jsonl", 100 + 300 * k, 150) for k in range(2)]
    gate, go = tmp_path / "gate", tmp_path / "go"
    go.touch()
    stale = run_py(WORKER, str(data), str(files[0]), str(gate), env={"RAW": "1"})  # loads the index, then waits
    while not list(tmp_path.glob("gate.*")) and stale.poll() is None:
        time.sleep(0.05)
    assert run_py(WORKER, str(data), str(files[1]), str(go)).wait(timeout=300) == 0  # another process writes
    gate.touch()
    assert stale.wait(timeout=300) == 0  # the unlocked writer persists its stale index over the other's
    state = fresh_state(data)
    assert len(state["docs"]) == 350 and state["bad"]  # the failure the lock prevents
    assert sorted(check(col)) == sorted(state["bad"]) == sorted(check(col, ids=state["bad"] + list(state["docs"])[:5]))
    s = ingest_paths(files, col, embedder, progress=False)  # a plain re-run finds nothing to do
    assert (s.unchanged, s.repaired, s.added) == (300, 0, 0)
    s = ingest_paths(files, col, embedder, progress=False, verify=True)  # `--verify`: re-embeds the lost ones
    assert (s.unchanged, s.repaired) == (300, len(state["bad"]))
    after = fresh_state(data)
    assert after["bad"] == [] and after["docs"] == state["docs"] and after["self"] == after["probed"]


def test_second_writer_fails_fast_with_no_wait_and_readers_are_not_blocked(tmp_path: Path, make_collection) -> None:
    col = make_collection()
    data = data_dir_of(col)
    assert data is not None and (data / "chroma").is_dir()
    assert data_dir_of(object()) is None
    code = """
        import sys
        from index.lock import write_lock, StoreBusy
        try:
            with write_lock(sys.argv[1], "ingest", wait=False):
                print("got it")
        except StoreBusy as e:
            print("busy:", e)
    """
    with write_lock(data, "ask"):
        p = run_py(code, str(data), stdout=subprocess.PIPE)
        out = p.communicate(timeout=60)[0]
        assert out.startswith("busy:") and f"(pid {os.getpid()}, ask)" in out and "--no-wait" in out
        assert col.count() == 0  # a reader in the holder's own process, and below one in another process
        r = run_py(
            "from index.store import open_client; import sys; print(open_client(sys.argv[1]).list_collections())",
            str(data),
            stdout=subprocess.PIPE,
        )
        assert "corpus" in r.communicate(timeout=60)[0]
        with write_lock(data, "nested"):  # re-entrant in one process
            pass
    p = run_py(code, str(data), stdout=subprocess.PIPE)
    assert p.communicate(timeout=60)[0].strip() == "got it"
    with write_lock(None, "server store"):  # a server store: no lock at all
        pass


def test_waiting_writer_says_whom_it_waits_for_once(tmp_path: Path) -> None:
    code = """
        import sys
        from index.lock import write_lock
        with write_lock(sys.argv[1], "prune"):
            print("done", flush=True)
    """
    with write_lock(tmp_path, "ingest"):
        p = run_py(code, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = p.stderr.readline()
        assert line.strip() == f"waiting for another writer (pid {os.getpid()}, ingest) to finish..."
    out, err = p.communicate(timeout=60)
    assert out.strip() == "done" and "waiting" not in err


# ---------------------------------------------------------------------------------------------------------
# Sources are canonical paths


def test_same_name_in_two_folders_are_two_sources(tmp_path: Path, make_collection, embedder, monkeypatch) -> None:
    col = make_collection()
    a, b = tmp_path / "projA", tmp_path / "projB"
    a.mkdir(), b.mkdir()
    corpus(a / "data.jsonl", 0, 5)
    corpus(b / "data.jsonl", 100, 3)
    monkeypatch.chdir(a)
    ingest_paths(["data.jsonl"], col, embedder, progress=False)
    monkeypatch.chdir(b)
    s = ingest_paths(["data.jsonl"], col, embedder, prune=True, progress=False)
    assert (s.added, s.removed, col.count()) == (3, 0, 8)
    sources = {m["source"] for m in col.get(include=["metadatas"])["metadatas"]}
    assert sources == {str((a / "data.jsonl").resolve()), str((b / "data.jsonl").resolve())}


def test_one_file_under_three_spellings_is_one_source(tmp_path: Path, make_collection, embedder, monkeypatch) -> None:
    col = make_collection()
    path = corpus(tmp_path / "s.jsonl", 0, 6)
    (tmp_path / "link.jsonl").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    ingest_paths(["s.jsonl"], col, embedder, progress=False)
    corpus(path, 0, 6, variant=" (edited)")
    s = ingest_paths([str(path)], col, embedder, progress=False)  # the edit replaces, by absolute path
    assert (s.added, s.updated, col.count()) == (0, 6, 6)
    corpus(path, 0, 4, variant=" (edited)")
    s = ingest_paths(["link.jsonl"], col, embedder, prune=True, progress=False)  # prune through the symlink
    assert (s.removed, col.count()) == (2, 4)


def test_relative_sources_of_an_old_store_are_reported_and_migrated(
    tmp_path: Path, make_collection, embedder, monkeypatch
) -> None:
    from ingest.pipeline import ingest_records

    col = make_collection()
    path = corpus(tmp_path / "old.jsonl", 0, 4)
    old = [
        Record(f"Question {i} about subject {i % 23}?", f"Answer {i}: fact {i * 7919 % 10007}.", source="old.jsonl")
        for i in range(4)
    ]
    ingest_records(old, col, embedder, progress=False)  # as an older version stored them
    monkeypatch.chdir(tmp_path)  # run from the folder they were ingested from, as users do
    corpus(path, 0, 4, variant=" (edited)")
    s = ingest_paths([path], col, embedder, progress=False)
    assert any("relative path" in w and "--migrate-sources" in w for w in s.warnings)
    assert col.count() == 8  # the old versions cannot be replaced: their source is not this file's
    assert migrate_sources(col, tmp_path) == 4
    s = ingest_paths([path], col, embedder, progress=False)
    assert (s.unchanged, col.count(), s.warnings) == (4, 4, [])  # now the edits replace them


# ---------------------------------------------------------------------------------------------------------
# Damaged stores, backup and restore


def filled_store(tmp_path: Path, embedder, n: int = 30) -> Path:
    data = tmp_path / "store"
    col = get_collection(open_client(data), "corpus", model=embedder.name, dim=embedder.dim)
    ingest_paths([corpus(tmp_path / "f.jsonl", 0, n)], col, embedder, progress=False)
    return data


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_damaged_database_is_named_not_silently_replaced(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "d"
    col = open_client(data).get_or_create_collection("corpus", embedding_function=None)
    col.add(
        ids=[str(i) for i in range(300)],
        embeddings=np.eye(300, 8, dtype=np.float32).tolist(),
        documents=["some text " * 20] * 300,
    )
    db = data / "chroma" / "chroma.sqlite3"
    size = db.stat().st_size
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "truncated":
        os.truncate(db, size // 2)
    else:
        with db.open("r+b") as f:
            f.seek(0)
            f.write(os.urandom(4096))
    with pytest.raises(StoreDamaged) as e:
        open_client(data)
    msg = str(e.value)
    assert str(db) in msg and "damaged" in msg and "restore" in msg and "\n" not in msg
    assert e.value.exit_code == 1


def test_backup_restore_round_trip_refuses_to_overwrite_without_force(tmp_path: Path, embedder) -> None:
    from index.backup import backup, restore

    data = filled_store(tmp_path, embedder)
    reader = get_collection(open_client(data), "corpus", model=embedder.name, dim=None, create=False)
    dest = backup(data, tmp_path / "bk")
    assert reader.count() == 30  # readers kept working
    with pytest.raises(UsageError, match="not empty"):
        backup(data, tmp_path / "bk")
    with pytest.raises(UsageError, match="--force"):
        restore(dest, data)
    other = tmp_path / "other"
    restore(dest, other)  # an empty target needs no force
    state = fresh_state(other)
    assert len(state["docs"]) == 30 and state["bad"] == [] and state["self"] == state["probed"]
    (data / "chroma" / "chroma.sqlite3").write_bytes(b"")  # the damage that used to lose everything
    restore(dest, data, force=True)
    assert fresh_state(data)["docs"] == state["docs"]
    assert not (data / "chroma.previous").exists() and not (data / "chroma.restoring").exists()


def test_an_interrupted_restore_is_reported(tmp_path: Path, embedder) -> None:
    data = filled_store(tmp_path, embedder, n=3)
    (data / "chroma").rename(data / "chroma.previous")  # stopped between moving the old store and the new one
    with pytest.raises(StoreDamaged, match="restore .* was interrupted"):
        open_client(data)


def test_data_dir_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="lies under a file") as e:
        open_client(tmp_path / "f" / "data")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_disk_full_mid_ingest_says_so_and_loses_nothing(tmp_path: Path, embedder) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        col = get_collection(open_client(mnt / "d"), "corpus", model=embedder.name, dim=embedder.dim)
        ingest_paths([corpus(tmp_path / "a.jsonl", 0, 100)], col, embedder, progress=False)
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(mnt).free - 300_000))
        more = corpus(tmp_path / "b.jsonl", 1000, 1500)
        with pytest.raises(StoreError, match="disk holding .* is full") as e:
            ingest_paths([more], col, embedder, progress=False)
        assert "\n" not in str(e.value)
        filler.unlink()
        state = fresh_state(mnt / "d")
        assert state["bad"] == [] and len(state["docs"]) >= 100
        ingest_paths([more], col, embedder, progress=False)  # frees space, runs again: resumes
        assert len(fresh_state(mnt / "d")["docs"]) == 1600
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_chroma_server_gone_mid_ingest_is_one_line(tmp_path: Path, embedder) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    server = subprocess.Popen(
        [chroma, "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):  # wait until it answers (up to a minute on a busy machine)
            try:
                client = open_client(host="127.0.0.1", port=port)
                break
            except StoreError:
                time.sleep(0.1)
        col = get_collection(client, "corpus", model=embedder.name, dim=embedder.dim)
        assert data_dir_of(col) is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.raises(StoreError, match="lost the Chroma server at .*run the same command again") as e:
        ingest_paths([corpus(tmp_path / "c.jsonl", 0, 20)], col, embedder, progress=False)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_corrupt_onnx_cache_is_exported_again_with_a_warning(tmp_path: Path, capsys, monkeypatch) -> None:
    from index.embed import _resolve
    from index.onnx_encoder import OnnxEncoder, _cache_key, cache_dir

    model = Path(_resolve("all-MiniLM-L6-v2"))
    first = OnnxEncoder.load(model)  # the user's real cache, exported there once if missing
    name = f"{model.name}-{_cache_key(model)}.onnx"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache_dir().mkdir(parents=True)
    (cache_dir() / name).write_bytes(b"not a protobuf" * 10)  # the damage: same name, garbage inside
    again = OnnxEncoder.load(model)
    assert "is damaged (InvalidProtobuf); making it again" in capsys.readouterr().err
    assert np.allclose(first.encode(["hello there"]), again.encode(["hello there"]), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# One line instead of a traceback, bad bytes, small things


def test_a_very_deep_json_line_is_rejected_and_the_rest_ingest(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "Fine?", "response": GOOD}, deep, {"prompt": "Also fine?", "response": GOOD + " Two."}],
    )
    records, rejections = collect([path])
    assert len(records) == 2 and [(r.line, "nested too deeply" in r.reason) for r in rejections] == [(2, True)]
    (tmp_path / "d.json").write_text(deep)
    assert "nested too deeply" in next(iter(read_path(tmp_path / "d.json"))).reason
    meta = {"prompt": "Q?", "response": GOOD, "meta": json.loads('{"a":' * 100 + "1" + "}" * 100)}
    _, rej = collect([write_jsonl(tmp_path / "m.jsonl", [meta])])
    assert "nested deeper than 32" in rej[0].reason


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_an_unreadable_file_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "eio.jsonl").symlink_to("/proc/self/mem")  # reading it at offset 0 fails with EIO
    with pytest.raises(ReadError, match=r"/proc/\d+/mem: cannot read it \(Input/output error\)") as e:
        collect([tmp_path])
    assert "\n" not in str(e.value)


def test_control_characters_are_bad_bytes() -> None:
    for ch in ("\x00", "\x07", "\x1b", "\x7f", "\x85"):
        reason = check_record(Record("Question?", f"An answer{ch} that is otherwise fine and real."))
        assert reason and reason.startswith("bad bytes: response holds control character U+")
    assert check_record(Record("Question?", "Tabs\tnewlines\nand\r\ncarriage returns are fine here.")) is None


def test_binary_txt_is_one_rejection_and_long_paragraphs_split(tmp_path: Path) -> None:
    (tmp_path / "blob.txt").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
    items = list(read_path(tmp_path / "blob.txt"))
    assert len(items) == 1 and "binary file" in items[0].reason
    text = "".join(f"This sentence {i} is one of many in a long paragraph without a blank line. " for i in range(600))
    (tmp_path / "long.md").write_text("# Long\n\n" + text + "\n", encoding="utf-8")
    records, rejections = collect([tmp_path / "long.md"])
    assert rejections == [] and len(records) > 20
    assert all(r.response.endswith(".") and len(r.response.encode()) <= 1500 for r in records)
    found = {int(n) for r in records for n in re.findall(r"This sentence (\d+) ", r.response)}
    assert found == set(range(600))  # every sentence kept, whole; passages overlap by a few sentences
    assert sum(r.response.count("This sentence") for r in records) <= 600 * 1.3


def test_symlink_loops_and_fifos_are_named(tmp_path: Path) -> None:
    (tmp_path / "loop.jsonl").symlink_to(tmp_path / "loop.jsonl")
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(ReadError, match="a symlink loop"):
        list(read_path(tmp_path / "loop.jsonl"))
    with pytest.raises(ReadError, match="a FIFO"):
        list(read_path(tmp_path / "pipe.jsonl"))
    with pytest.raises(ReadError, match="no such file or folder"):
        list(read_path(tmp_path / "missing.jsonl"))


def test_empty_files_warn_and_strict_creates_nothing(tmp_path: Path, data_dir: Path, embedder) -> None:
    (tmp_path / "e.jsonl").write_text("")
    (tmp_path / "e.md").write_text("\n\n")
    client = open_client(data_dir)
    made = []

    def factory():
        made.append(1)
        return get_collection(client, "corpus", model=embedder.name, dim=embedder.dim)

    s = ingest_paths([tmp_path / "e.jsonl", tmp_path / "e.md"], factory, embedder, progress=False)
    assert [w.split(": ", 1)[1] for w in s.warnings] == ["held no records (an empty file)"] * 2
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q?", "response": "TODO"}])
    strict_dir = tmp_path / "strict"
    client2 = open_client(strict_dir)
    with pytest.raises(IngestError) as e:
        ingest_paths([bad], lambda: get_collection(client2, "corpus", model="m", dim=3), embedder, strict=True)
    assert client2.list_collections() == []
    d = json.loads(json.dumps(e.value.summary.to_dict()))
    assert d["rejected"] == 1 and d["rejections"][0]["line"] == 1 and "placeholder" in d["rejections"][0]["reason"]


def test_json_error_message_has_no_repeated_word(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "a\tb", "response": "x"}\n', encoding="utf-8")
    _, rej = collect([path])
    assert "control character at column" in rej[0].reason and "at at" not in rej[0].reason


def test_an_empty_search_is_a_usage_error(make_collection, embedder) -> None:
    col = make_collection()
    for q in ("", "   \n"):
        with pytest.raises(UsageError, match="empty"):
            search(col, embedder, q)
    assert isinstance(UsageError("x"), ShvayambhuError) and issubclass(StoreBusy, ShvayambhuError)
    assert repair(col, embedder, ids=[]) == 0 and check(col) == []


@pytest.mark.slow
def test_a_long_running_reader_sees_other_writers_and_filtered_queries_work(tmp_path: Path, embedder) -> None:
    from index.retrieve import query_vector

    data = tmp_path / "d"
    col = small_sync_store(data, embedder)
    ingest_paths([corpus(tmp_path / "a.jsonl", 0, 40)], col, embedder, progress=False)
    probe = embedder.embed_query("Question 130 about subject 15?")
    assert query_vector(col, probe, k=3, where={"line": {"$gt": 0}})  # this process has the index loaded
    code = """
        import sys
        from index.embed import load_embedder
        from index.store import open_client, get_collection
        from ingest.pipeline import ingest_paths
        e = load_embedder()
        ingest_paths([sys.argv[2]], get_collection(open_client(sys.argv[1]), "corpus", model=e.name, dim=e.dim), e)
    """
    p = run_py(code, str(data), str(corpus(tmp_path / "b.jsonl", 100, 200)))
    assert p.wait(timeout=300) == 0
    hits = query_vector(col, probe, k=3, where={"line": {"$gt": 0}})  # failed: "Error finding id"
    assert hits[0].prompt == "Question 130 about subject 15?" and col.count() == 240


def test_ingest_with_no_wait_fails_fast_and_writes_nothing(tmp_path: Path, make_collection) -> None:
    col = make_collection()
    data = data_dir_of(col)
    code = """
        import sys
        from index.store import open_client
        from ingest.pipeline import ingest_paths
        from index.lock import StoreBusy
        col = open_client(sys.argv[1]).get_collection("corpus")
        try:
            ingest_paths([sys.argv[2]], col, lambda: 1 / 0, wait=False)
        except StoreBusy as e:
            print("busy:", e)
    """
    with write_lock(data, "prune"):
        p = run_py(code, str(data), str(corpus(tmp_path / "c.jsonl", 0, 5)), stdout=subprocess.PIPE)
        out = p.communicate(timeout=120)[0]
    assert out.startswith(f"busy: another writer (pid {os.getpid()}, prune)") and p.returncode == 0
    assert col.count() == 0
