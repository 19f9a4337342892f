"""The CLI through a running `shvayambhu serve` (a warm model): found through <data dir>/serve.json, the same
answer as in-process, stale files ignored and removed, --no-server leaves it be; and `serve` on a port in use."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.serve import discovery

QUESTION = "Why is the sky blue?"
GREEDY = {"SHVAYAMBHU_OLLAMA_TEMPERATURE": "0", "SHVAYAMBHU_OLLAMA_SEED": "7"}  # the same text every time
ASK = ["ask", QUESTION, "--backend", "ollama", "--no-memory", "--json", "-k", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def greedy(monkeypatch, cli_env) -> dict[str, str]:
    """Deterministic answers in this process and in the server's (settings from the environment in both)."""
    for name, value in GREEDY.items():
        monkeypatch.setenv(name, value)
    return {**cli_env, **GREEDY}


@pytest.fixture
def server(greedy, seed_home: Path, tmp_path: Path):
    """`shvayambhu serve --port 0` in a subprocess over seed_home (the fake Ollama as its backend); yields
    its announcement once serve.json names it; stopped with SIGTERM afterwards."""
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "rag.cli", "serve", "--port", "0", "--backend", "ollama", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=greedy, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 120
    info = None
    while time.monotonic() < deadline and proc.poll() is None:
        info = discovery.read(seed_home)
        if info is not None and info["pid"] == proc.pid:
            break
        time.sleep(0.2)
    assert info is not None and proc.poll() is None, (tmp_path / "serve.log").read_text()
    try:
        yield info
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert not discovery.server_file(seed_home).exists()  # removed at exit


@pytest.mark.slow
def test_ask_and_search_go_through_the_server_and_answer_as_in_process(server, run_cli, monkeypatch, seed_home):
    import rag.api

    code, local, err = run_cli(*ASK, "--no-server")
    assert code == 0, err

    def no_local(*a, **k):
        raise AssertionError("answered in-process although a server runs")

    local_class = rag.api.Shvayambhu
    monkeypatch.setattr(rag.api, "Shvayambhu", no_local)
    code, remote, err = run_cli(*ASK)
    assert code == 0, err
    a, b = json.loads(local), json.loads(remote)
    assert a["answer"] and a["sources"]
    for d in (a, b):
        d.pop("timings")
    assert b == a  # text, sources, confidence and its details, backend, model: field for field

    code, plain, err = run_cli("ask", QUESTION, "--backend", "ollama", "--no-memory", "-k", "2")
    assert code == 0 and a["answer"] in plain and f"confidence {a['confidence']:.2f}" in plain
    code, streamed, err = run_cli("ask", QUESTION, "--backend", "ollama", "--no-memory", "-k", "2", "--stream")
    assert code == 0 and streamed.split("\nsources:")[0].strip() == plain.split("\nsources:")[0].strip()
    talk = f"{QUESTION}\n/sources\n/memory\n/exit\n"
    code, chat, err = run_cli("chat", "--backend", "ollama", "-k", "2", "--session", "warm", stdin=talk)
    assert code == 0, err
    assert "(ollama llama3.2)" in chat and "  confidence 0." in chat  # /sources of the server's answer
    assert "sky" in chat.split("you> ")[-2]  # /memory lists the exchange the server remembered
    code, hits, err = run_cli("search", "sky colour", "-k", "3", "--json")
    assert code == 0 and len(json.loads(hits)) == 3, err

    code, out, err = run_cli("ask", "", "--backend", "ollama", "--no-memory")  # the server's error, as ours
    assert code == 1 and err.strip() == "error: the question is empty", err

    # other settings, or --no-server: answered in-process, the server's file left as it is
    monkeypatch.setattr(rag.api, "Shvayambhu", local_class)
    before = discovery.server_file(seed_home).read_bytes()
    code, out, err = run_cli(*ASK, "--mode", "dense")
    assert code == 0 and "runs with other settings" in err and "answering in this process" in err
    code, out, err = run_cli(*ASK, "--no-server")
    assert code == 0 and err == ""
    assert discovery.server_file(seed_home).read_bytes() == before


def test_stale_files_are_ignored_and_removed(run_cli, seed_home):
    path = discovery.server_file(seed_home)
    stale = {"pid": _dead_pid(), "host": "127.0.0.1", "port": _free_port(), "settings": "x", "auth": False}
    path.write_text(json.dumps(stale))
    code, out, err = run_cli(*ASK, "--no-server")  # --no-server does not even look
    assert code == 0 and path.exists()
    code, out, err = run_cli(*ASK)
    assert code == 0 and json.loads(out)["answer"], err
    assert not path.exists()

    path.write_text(json.dumps({**stale, "pid": os.getpid()}))  # a live pid, but nothing on the port
    assert run_cli(*ASK)[0] == 0 and not path.exists()
    path.write_text("{torn")
    assert run_cli(*ASK)[0] == 0


def test_serve_on_a_port_in_use_says_so_in_one_line(run_cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out, err = run_cli("serve", "--port", str(port))
    assert code == 1
    assert err.strip() == f"error: port {port} on 127.0.0.1 is in use (another server?): pick a free one with --port N"


def test_status_counts_one_record_in_the_singular(run_cli, tmp_path, monkeypatch):
    home = tmp_path / "one"
    monkeypatch.setenv("SHVAYAMBHU_HOME", str(home))
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps({"prompt": "What colour is the sky?", "response": "Blue, on a clear day."}) + "\n")
    assert run_cli("ingest", str(corpus))[0] == 0
    code, out, err = run_cli("status")
    assert code == 0 and "corpus: 1 record (" in out, out
