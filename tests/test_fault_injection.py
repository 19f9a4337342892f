"""Fault injection against the CLI and `serve`: kill -9, SIGTERM and SIGINT in the middle of a write, a hot
journal, a read-only folder, garbage inside the store file, a full disk, and restore under a running server.
Real processes, real Chroma and the real embedding model; small corpora, so each case takes seconds.

The serve cases send uploads as `application/jsonl` bodies through `post_ingest`: change it there if the
server's rules for state-changing requests change."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_faults import corpus, fresh_state, run_py

from index.store import StoreReadOnly, get_collection, open_client
from ingest.pipeline import ingest_paths

REPO = Path(__file__).resolve().parent.parent
N = 300  # records in the interrupted ingest: one Chroma batch, written in one transaction
BASE = 40  # of them ingested before, so that the collection exists and the kill lands in a record write
KILLS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]


# ---------------------------------------------------------------------------------------------------------
# Helpers: the CLI and the server as real processes


def shv_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHVAYAMBHU_", "OLLAMA_"))}
    env.update(
        {
            "SHVAYAMBHU_HOME": str(home),
            "OLLAMA_HOST": "http://127.0.0.1:9",  # nothing there: no test reaches a real Ollama
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def shv(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `shvayambhu ARGS` in a new process against `home`."""
    cmd = [sys.executable, "-m", "rag.cli", *args]
    return subprocess.run(cmd, env=shv_env(home), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    """The single `error:` line of a failed command, which says each of `words`; no traceback."""
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), p.stderr[-3000:]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `shvayambhu serve` process: `.proc`, `.url`, `.log` (its stderr so far)."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def served(home: Path, log: Path) -> Iterator[Server]:
    """`shvayambhu serve` on a free loopback port over `home`, ready (store and model loaded) for the block."""
    port = free_port()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--port", str(port), "--log-level", "warning"],
            env=shv_env(home),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, server.log[-3000:]
            try:
                if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 180 s"
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def post_ingest(url: str, path: Path, name: str = "notes.jsonl", timeout: float = 300) -> httpx.Response:
    """Upload a JSONL corpus to the server's ingest route."""
    return httpx.post(
        f"{url}/v1/ingest?name={name}",
        content=path.read_bytes(),
        headers={"Content-Type": "application/jsonl"},
        timeout=timeout,
    )


def base_store(home: Path, corpus_path: Path, embedder) -> None:
    """`home` holding the first BASE records of `corpus_path`, ingested in this process."""
    base = corpus(corpus_path.with_name("base.jsonl"), 0, BASE)
    col = get_collection(open_client(home), "corpus", model=embedder.name, dim=embedder.dim, embed_field="prompt")
    ingest_paths([base], col, embedder, progress=False)


def journal_of(home: Path) -> Path:
    return home / "chroma" / "chroma.sqlite3-journal"


MAGIC = bytes.fromhex("d9d505f920a163d7")  # a rollback journal's header once synced: a journal sqlite plays back


def is_hot(journal: Path) -> bool:
    """Whether `journal` holds a synced transaction for sqlite to roll back (a killed writer's)."""
    try:
        with journal.open("rb") as f:
            return f.read(8) == MAGIC
    except OSError:
        return False


def default_sigint() -> None:
    """In the child before exec: Ctrl-C's default disposition, so that Python turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_mid_write(proc: subprocess.Popen, home: Path, sig: int, timeout: float = 240) -> bool:
    """Send `sig` to `proc` once it holds the write lock for an ingest and is inside a transaction whose journal
    is synced (the database file may already hold changed pages); returns whether a hot journal was left."""
    lock, journal = home / "write.lock", journal_of(home)
    deadline = time.monotonic() + timeout
    while "ingest" not in (lock.read_text() if lock.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, "the writer never took the write lock"
        time.sleep(0.01)
    while not is_hot(journal):
        assert proc.poll() is None, "the writer finished before it could be interrupted"
        assert time.monotonic() < deadline, "the writer never opened a transaction"
        time.sleep(0.0002)
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    return is_hot(journal)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, embedder) -> tuple[Path, dict]:
    """The corpus of N records and the state of a store that ingested it without interruption."""
    d = tmp_path_factory.mktemp("reference")
    path = corpus(d / "full.jsonl", 0, N)
    col = get_collection(open_client(d / "home"), "corpus", model=embedder.name, dim=embedder.dim)
    ingest_paths([path], col, embedder, progress=False)
    state = fresh_state(d / "home")
    assert len(state["docs"]) == N and state["bad"] == []
    return path, state


def assert_same_collection(home: Path, reference_state: dict) -> None:
    state = fresh_state(home)
    assert state["docs"] == reference_state["docs"]
    assert state["bad"] == [] and state["self"] == state["probed"]
    con = __import__("sqlite3").connect(home / "chroma" / "chroma.sqlite3")
    try:
        assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        con.close()


def run_again(home: Path, path: Path, embedder) -> None:
    """Run the interrupted ingest again, in this process (which had the store open before the kill)."""
    col = get_collection(open_client(home), "corpus", model=embedder.name, dim=embedder.dim, embed_field="prompt")
    ingest_paths([path], col, embedder, progress=False)


# ---------------------------------------------------------------------------------------------------------
# An interrupted write: the hot journal is rolled back, not called damage


def make_hot_journal(db: Path) -> None:
    """What a writer killed inside a transaction leaves: changed pages in the database, the originals in a
    `-journal` beside it (a tiny page cache makes sqlite write changed pages before the commit)."""
    code = """
        import os, signal, sqlite3, sys
        con = sqlite3.connect(sys.argv[1], isolation_level=None)
        con.execute("PRAGMA cache_size=2")
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE embeddings SET seq_id = seq_id")
        con.execute("DELETE FROM embedding_metadata")
        os.kill(os.getpid(), signal.SIGKILL)
    """
    assert run_py(code, str(db)).wait(timeout=60) == -signal.SIGKILL
    assert db.with_name(db.name + "-journal").stat().st_size > 0


def vector_store(data: Path, n: int = 300) -> None:
    col = open_client(data).get_or_create_collection("corpus", embedding_function=None)
    col.add(
        ids=[str(i) for i in range(n)],
        embeddings=np.eye(n, 8, dtype=np.float32).tolist(),
        documents=[f"document {i} " * 10 for i in range(n)],
        metadatas=[{"i": i} for i in range(n)],
    )


def test_a_hot_journal_is_rolled_back_and_said_in_one_line(tmp_path: Path, capfd) -> None:
    data = tmp_path / "d"
    vector_store(data)
    db = data / "chroma" / "chroma.sqlite3"
    make_hot_journal(db)
    capfd.readouterr()
    open_client(data)  # was: StoreDamaged "attempt to write a readonly database", advising to move it aside
    err = capfd.readouterr().err
    assert err.count("recovered the store in") == 1 and "rolled back a write that was interrupted" in err
    assert not db.with_name(db.name + "-journal").exists()
    code = """
        import sys
        from index.store import open_client
        col = open_client(sys.argv[1]).get_collection("corpus")
        got = col.get(ids=["7"], include=["metadatas", "documents"])
        print(col.count(), got["metadatas"][0]["i"], got["documents"][0].split()[1])
    """
    p = run_py(code, str(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    assert out.split() == ["300", "7", "7"] and "recovered" not in err  # nothing lost, nothing left to recover


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for this process: a read-only bind mount as root (root ignores modes), else modes."""
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
            pytest.skip("cannot bind-mount here")
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        for p, m in modes.items():
            p.chmod(m)


@pytest.mark.parametrize("hot", [False, True], ids=["clean", "hot-journal"])
def test_a_read_only_store_is_read_only_not_damaged(tmp_path: Path, hot: bool) -> None:
    data = tmp_path / "d"
    vector_store(data, 50)
    if hot:
        make_hot_journal(data / "chroma" / "chroma.sqlite3")
    with read_only(data):
        code = """
            import sys
            from index.store import open_client, StoreReadOnly
            try:
                open_client(sys.argv[1])
            except StoreReadOnly as e:
                print(e)
        """
        p = run_py(code, str(data), stdout=subprocess.PIPE)
        msg = p.communicate(timeout=120)[0].strip()
    assert "is read-only" in msg and "damaged" not in msg and "intact" in msg, msg
    assert issubclass(StoreReadOnly, Exception) and "\n" not in msg
    if hot:
        assert "interrupted write" in msg
    open_client(data)  # writable again: the journal (if any) is rolled back, the store opens


# ---------------------------------------------------------------------------------------------------------
# Kill the CLI and the server mid-write; running it again gives the same collection


@pytest.mark.slow
@pytest.mark.parametrize("sig", KILLS, ids=lambda s: signal.Signals(s).name)
def test_cli_ingest_interrupted_and_run_again_gives_the_same_collection(
    tmp_path: Path, embedder, reference, sig: int, capfd
) -> None:
    path, want = reference
    home = tmp_path / "home"
    base_store(home, tmp_path / "c.jsonl", embedder)
    cmd = [sys.executable, "-m", "rag.cli", "ingest", str(path)]
    proc = subprocess.Popen(
        cmd,
        env=shv_env(home),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,  # as at a terminal: a run started in the background inherits SIGINT ignored
    )
    hot = kill_mid_write(proc, home, sig)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode in (-sig, 130), (proc.returncode, err[-2000:])
    assert hot or sig == signal.SIGINT  # kill -9 and SIGTERM stop it inside the transaction (Ctrl-C lets it end)
    capfd.readouterr()
    run_again(home, path, embedder)
    assert ("recovered the store in" in capfd.readouterr().err) == hot
    assert_same_collection(home, want)


@pytest.mark.slow
@pytest.mark.parametrize("sig", KILLS, ids=lambda s: signal.Signals(s).name)
def test_serve_ingest_interrupted_and_run_again_gives_the_same_collection(
    tmp_path: Path, embedder, reference, sig: int
) -> None:
    path, want = reference
    home = tmp_path / "home"
    base_store(home, tmp_path / "c.jsonl", embedder)
    with served(home, tmp_path / "serve.log") as server:
        upload = threading.Thread(target=lambda: _quietly(post_ingest, server.url, path), daemon=True)
        upload.start()
        hot = kill_mid_write(server.proc, home, sig)
        upload.join(timeout=60)
        assert hot or sig != signal.SIGKILL
    if sig == signal.SIGKILL:  # served again over the hot journal (it exited with a traceback), the same upload
        with served(home, tmp_path / "serve2.log") as server:
            assert server.log.count("recovered the store in") == 1
            r = post_ingest(server.url, path)
            assert r.status_code == 200, r.text
    else:  # the same upload ingested again (in this process: a second server start costs seconds)
        run_again(home, home / "uploads" / "notes.jsonl", embedder)
    assert_same_collection(home, want)


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except httpx.HTTPError:
        pass  # the server went away mid-request: that is the point


# ---------------------------------------------------------------------------------------------------------
# Restore under a running server


def test_restore_names_the_process_that_has_the_store_open_and_openers_wait_for_it(tmp_path: Path) -> None:
    from index.lock import OPEN_NAME, StoreInUse, _key, _open_holds, sole_user

    data = tmp_path / "d"
    vector_store(data, 5)  # this process has it open too: its own hold never blocks its own restore
    code = """
        import sys
        from index.lock import hold_open
        hold_open(sys.argv[1])
        print("held", flush=True)
        sys.stdin.read()
    """
    holder = run_py(code, str(data), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout and holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreInUse) as e:
        with sole_user(data, "restore"):
            pass
    msg = str(e.value)
    assert f"pid {holder.pid} (python" in msg and "then run the restore again" in msg and "\n" not in msg
    holder.communicate("", timeout=60)
    opener = "import sys; from index.lock import hold_open; hold_open(sys.argv[1]); print('opened')"
    with sole_user(data, "restore"):  # the holder gone, restore goes ahead; an opener meanwhile waits
        late = run_py(opener, str(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert late.poll() is None
    out, err = late.communicate(timeout=60)
    assert out.strip() == "opened" and f"waiting for a restore of the store in {data} to finish" in err
    assert _key(data / OPEN_NAME) in _open_holds  # this process's own hold is back


@pytest.mark.slow
def test_restore_refuses_while_a_server_has_the_store_open(tmp_path: Path, embedder) -> None:
    from index.backup import backup, restore

    home = tmp_path / "home"
    base_store(home, tmp_path / "c.jsonl", embedder)
    bk = backup(home, tmp_path / "bk")
    more = corpus(tmp_path / "more.jsonl", 1000, 12)
    with served(home, tmp_path / "serve.log") as server:
        r = post_ingest(server.url, more)
        assert r.status_code == 200 and r.json()["added"] == 12, r.text
        p = shv(home, "restore", str(bk), "--force")
        line = one_line_error(p, f"pid {server.proc.pid}", "serve", "restore", "has it open")
        assert "kill PID" in line
        r = httpx.post(server.url + "/v1/search", json={"query": "Question 1005 about subject 16?", "k": 1}, timeout=60)
        assert r.status_code == 200 and r.json()[0]["prompt"] == "Question 1005 about subject 16?"
    assert len(fresh_state(home)["docs"]) == BASE + 12  # the acknowledged upload is still there
    restore(bk, home, force=True)  # the server gone, restore goes ahead
    assert len(fresh_state(home)["docs"]) == BASE


# ---------------------------------------------------------------------------------------------------------
# Garbage inside the store file; a full disk


def spoil_middle(db: Path) -> None:
    """Random bytes over the middle of the file: the header and schema still read, the records do not."""
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek(size // 2)
        f.write(np.random.default_rng(0).bytes(min(200_000, size // 3)))


@pytest.mark.slow
def test_garbage_inside_the_store_file_is_one_line_everywhere(tmp_path: Path, embedder, reference) -> None:
    path, _ = reference
    home = tmp_path / "home"
    col = get_collection(open_client(home), "corpus", model=embedder.name, dim=embedder.dim, embed_field="prompt")
    ingest_paths([path], col, embedder, progress=False)
    spoil_middle(home / "chroma" / "chroma.sqlite3")
    for args in (["search", "Question 5 about subject 5?"], ["status", "--check"], ["ingest", str(path)]):
        one_line_error(shv(home, *args), "is damaged", "restore")
    with (home / "chroma" / "chroma.sqlite3").open("r+b") as f:
        f.write(b"not sqlite at all")  # the header too: the server refuses to start, in one line
    one_line_error(shv(home, "serve", "--port", str(free_port())), "is damaged", "restore")


@contextmanager
def small_disk(tmp_path: Path, mb: int = 16) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int = 0) -> Path:
    """Fill the disk at `mnt` but for about `leave` bytes; the filler file is returned for deleting."""
    filler = mnt / "filler"
    with filler.open("wb") as f:
        try:
            while (room := shutil.disk_usage(mnt).free - leave) > 0:
                f.write(b"\0" * min(room, 1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


@pytest.mark.slow
def test_a_full_disk_is_one_line_in_the_cli_and_507_under_serve(tmp_path: Path, embedder) -> None:
    with small_disk(tmp_path) as mnt:
        home = mnt / "home"
        base_store(home, tmp_path / "c.jsonl", embedder)
        more = corpus(tmp_path / "more.jsonl", 2000, 200)
        with served(home, tmp_path / "serve.log") as server:
            filler = fill(mnt, leave=96 << 10)  # room for the upload, not for the store's write
            r = post_ingest(server.url, more)
            assert r.status_code == 507, r.text
            msg = r.json()["error"]["message"]
            assert "disk holding" in msg and "is full" in msg and "Free some space" in msg and "\n" not in msg
            filler.unlink()
            filler = fill(mnt)  # not even room for the upload
            r = post_ingest(server.url, more)
            assert r.status_code == 507 and "is full" in r.json()["error"]["message"], r.text
            q = {"query": "Question 7 about subject 7?", "k": 2}
            r = httpx.post(server.url + "/v1/search", json=q, timeout=60)  # reads keep being served
            assert r.status_code == 200 and r.json()[0]["prompt"] == "Question 7 about subject 7?", r.text
            # in this process, not through the running server (which keeps serving reads, as checked above)
            for args in (["search", "--no-server", "Question 7 about subject 7?"], ["status", "--check"]):
                one_line_error(shv(home, *args), "is full", "Free some space")
            filler.unlink()
            r = post_ingest(server.url, more)  # space again: the same upload goes through
            assert r.status_code == 200 and r.json()["added"] == 200, r.text
            assert server.proc.poll() is None
        state = fresh_state(home)
        assert len(state["docs"]) == BASE + 200 and state["bad"] == []
