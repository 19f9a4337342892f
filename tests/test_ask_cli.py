"""`shvayambhu ask`, `chat`, `self` and `memory` against the fake Ollama server: output shapes, streaming,
memory across processes, and one clear line with a non-zero exit for every backend failure."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ask_json_with_prompt_and_workspace(run_cli, fake_ollama):
    code, out, err = run_cli(
        "ask", "Why is the sky blue?", "--backend", "ollama", "--json", "--show-prompt", "--session", "j1"
    )
    assert code == 0, err
    d = json.loads(out)
    for key in (
        "answer",
        "sources",
        "confidence",
        "low_confidence",
        "backend",
        "model",
        "timings",
        "prompt",
        "workspace",
    ):
        assert key in d
    assert d["backend"] == "ollama" and d["model"] == "llama3.2" and d["answer"]
    assert {"retrieve", "generate", "total"} <= set(d["timings"])
    assert d["sources"] and {"id", "score", "prompt"} <= set(d["sources"][0])
    assert "Why is the sky blue during the day?" in [s["prompt"] for s in d["sources"]]
    assert 0.0 <= d["confidence"] <= 1.0 and d["low_confidence"] is False
    ws = d["workspace"]
    assert ws["winners"] and all("salience" in c and "kind" in c for c in ws["winners"] + ws["losers"])
    assert d["prompt"].startswith("<system>\nYou are Shvayambhu")
    sent = fake_ollama.bodies("/api/chat")[-1]
    assert sent["messages"][-1]["content"].endswith("</reference>\n\nWhy is the sky blue?")
    assert sent["options"]["temperature"] == 0.7 and sent["options"]["num_ctx"] == 4096


def test_ask_plain_stream_and_auto_pick_the_same_text(run_cli):
    code, plain, err = run_cli("ask", "How does photosynthesis work?", "--no-memory", "--seed", "3", "-k", "2")
    assert code == 0, err
    code, streamed, err = run_cli(
        "ask",
        "How does photosynthesis work?",
        "--no-memory",
        "--seed",
        "3",
        "--stream",
        "--backend",
        "auto",
        "-k",
        "2",
    )
    assert code == 0, err
    assert plain.split("\nsources")[0].strip() == streamed.split("\nsources")[0].strip()
    assert "confidence" in plain and "ollama llama3.2" in streamed


def test_show_prompt_plain(run_cli):
    code, out, _ = run_cli("ask", "What is a black hole?", "--show-prompt", "--no-memory")
    assert code == 0
    assert "=== prompt" in out and "=== workspace" in out and "won" in out and "exemplar" in out


def _fail(run_cli, *argv: str) -> str:
    code, out, err = run_cli(*argv)
    assert code != 0, out
    assert "Traceback" not in err + out
    return err


def test_backend_errors_are_one_line_and_non_zero(run_cli, fake_ollama, monkeypatch):
    dead = f"http://127.0.0.1:{_free_port()}"
    err = _fail(run_cli, "ask", "hi", "--backend", "ollama", "--ollama-host", dead, "--no-memory")
    assert "Cannot reach Ollama" in err and "ollama serve" in err

    monkeypatch.setenv("SHVAYAMBHU_BLT_CHECKPOINT", str(Path(dead.split("//")[1]) / "no-such-checkpoint"))
    monkeypatch.setenv("SHVAYAMBHU_MLX_MODEL", str(Path(dead.split("//")[1]) / "no-such-model.gguf"))
    err = _fail(run_cli, "ask", "hi", "--backend", "auto", "--ollama-host", dead, "--no-memory")
    assert "no backend available" in err and "ollama serve" in err
    assert "no BLT checkpoint at" in err and "; mlx: " in err
    monkeypatch.delenv("SHVAYAMBHU_BLT_CHECKPOINT")
    monkeypatch.delenv("SHVAYAMBHU_MLX_MODEL")

    err = _fail(run_cli, "ask", "hi", "--model", "nosuch", "--no-memory")
    assert "ollama pull nosuch" in err

    fake_ollama.behavior("llama3.2").delay = 5.0
    err = _fail(run_cli, "ask", "hi", "--timeout", "0.5", "--no-memory")
    assert "within 0.5 s" in err
    fake_ollama.behavior("llama3.2").delay = 0.0

    fake_ollama.behavior("llama3.2").strict_context = True
    monkeypatch.setenv("SHVAYAMBHU_OLLAMA_NUM_CTX", "64")
    err = _fail(run_cli, "ask", "Why is the sky blue?", "--no-memory")
    assert "does not fit num_ctx=64" in err
    monkeypatch.delenv("SHVAYAMBHU_OLLAMA_NUM_CTX")

    fake_ollama.behavior("llama3.2").fail_times = 1
    err = _fail(run_cli, "ask", "hi", "--no-memory", "--stream")
    assert "HTTP 500" in err

    assert "the question is empty" in _fail(run_cli, "ask", "  ", "--no-memory")
    assert "budget" in _fail(run_cli, "ask", "x" * 7000, "--no-memory")
    code, _, err = run_cli("ask", "hi", "--backend", "gpt")
    assert code == 2 and "--backend" in err


def test_memory_commands(run_cli):
    code, _, err = run_cli("ask", "Remember that my cat is called Miso.", "--session", "m1")
    assert code == 0, err
    code, out, _ = run_cli("memory", "list", "--session", "m1", "--json")
    mems = json.loads(out)
    assert len(mems) == 1 and mems[0]["kind"] == "exchange" and "Miso" in mems[0]["text"]
    code, out, _ = run_cli("memory", "search", "what is my cat called", "--session", "m1")
    assert code == 0 and "Miso" in out and "score" in out
    code, out, _ = run_cli("memory", "list", "--session", "other")
    assert "no memories" in out
    assert "m1" in json.loads(run_cli("memory", "sessions", "--json")[1])
    assert "no memory" in _fail(run_cli, "memory", "forget", "nonexistent", "--session", "m1")
    code, out, _ = run_cli("memory", "forget", mems[0]["id"][:10], "--session", "m1")
    assert code == 0 and "forgot 1 memory" in out
    run_cli("ask", "I live in Pune.", "--session", "m1")
    code, out, _ = run_cli("memory", "clear", "--session", "m1", "--yes")
    assert code == 0 and "cleared 1 memory" in out
    assert json.loads(run_cli("memory", "list", "--session", "m1", "--json")[1]) == []


def test_chat_loop(run_cli, fake_ollama):
    fake_ollama.behavior("llama3.2").reply = "Nice to meet Miso [1]."
    script = "Remember that my cat is called Miso.\n/sources\n/memory\n/reset\n/bogus\nHow is Miso?\n/exit\n"
    code, out, err = run_cli("chat", "--session", "c1", stdin=script)
    assert code == 0, err
    assert out.count("Shvayambhu> Nice to meet Miso") == 2
    assert "[1]" in out and "confidence" in out  # /sources
    assert "exchange" in out and "Miso" in out  # /memory
    assert "conversation reset" in out and "unknown command /bogus" in out
    last = fake_ollama.bodies("/api/chat")[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user"]  # /reset dropped the turns...
    assert "Miso" in last[-1]["content"].split("</reference>")[0]  # ...but the memory of them is recalled


def test_self_and_status(run_cli):
    code, out, _ = run_cli("self")
    assert code == 0 and "Shvayambhu" in out and "values:" in out and "[self_model]" in out
    sm = json.loads(run_cli("self", "--json")[1])
    assert sm["name"] == "Shvayambhu" and sm["values"]
    status = json.loads(run_cli("status", "--json")[1])
    assert status["backends"]["ollama"]["ready"] is True


@pytest.mark.slow
def test_a_fact_told_in_one_process_is_recalled_by_the_next(cli_env, fake_ollama, tmp_path):
    cmd = [sys.executable, "-m", "rag.cli", "ask", "--session", "proc"]
    first = subprocess.run(
        cmd + ["Remember that my cat is called Miso."],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    second = subprocess.run(
        cmd + ["What is my cat called?", "--json", "--show-prompt"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr
    d = json.loads(second.stdout)
    assert any("Miso" in m["text"] for m in d["memories"])
    prompt = fake_ollama.bodies("/api/chat")[-1]["messages"][-1]["content"]
    assert "Remember that my cat is called Miso." in prompt.split("</reference>")[0]  # the recalled memory, quoted
    assert [c["kind"] for c in d["workspace"]["winners"]].count("memory") == 1


def test_in_process_the_model_loads_in_a_thread_beside_the_store_and_is_used(seed_home, fake_ollama, monkeypatch):
    import threading

    import rag.api
    import rag.backends.select as select
    from rag.backends.base import BackendError
    from rag.cli.common import answering_assistant
    from rag.config import load_settings

    st = load_settings(
        None, {"backend": "ollama", "store": {"data_dir": str(seed_home)}, "ollama": {"host": fake_ollama.url}}
    )
    calls: list[str] = []
    real = select.select_backend

    def spy(settings, name, model=None):
        calls.append(threading.current_thread().name)
        return real(settings, name, model)

    monkeypatch.setattr(select, "select_backend", spy)
    monkeypatch.setattr(rag.api, "select_backend", spy)
    a = answering_assistant(st)
    assert a.backend().name == "ollama"
    assert calls == ["shvayambhu-model"]  # loaded once, in its thread, and adopted

    import rag.consciousness.prompt as prompt

    def no_head(profile):
        raise OSError("the disk is full")

    calls.clear()
    monkeypatch.setattr(prompt, "keep_head", no_head)  # the head not read ahead: the model is still adopted
    assert answering_assistant(st).backend().name == "ollama" and calls == ["shvayambhu-model"]

    def failing(settings, name, model=None):
        calls.append(threading.current_thread().name)
        raise BackendError("no model here")

    calls.clear()
    monkeypatch.setattr(select, "select_backend", failing)
    monkeypatch.setattr(rag.api, "select_backend", failing)
    a = answering_assistant(st)
    with pytest.raises(BackendError, match="no model here"):  # reported where the answer asks for the model
        a.backend()
    assert calls == ["shvayambhu-model", "MainThread"]


def test_the_footer_says_why_an_answer_was_held_low_in_process_or_from_a_server():
    """The layer's reason ("the documents found do not state this") beside a low confidence, for an answer made
    here or read back from a server's JSON; without one, the retrieval's reason."""
    from rag.cli.ask import _footer
    from rag.cli.remote import answer_of

    data = {"answer": "x", "sources": [], "confidence": 0.4, "low_confidence": True, "grounded": False,
            "backend": "mlx", "model": "m", "timings": {"total": 5.0}}  # fmt: skip
    held = answer_of(
        {**data, "confidence_details": {"value": 0.4, "low": True, "reason": "the documents found do not state this"}}
    )
    assert "confidence 0.40 (low: the documents found do not state this)" in _footer(held)
    assert "(low: little in the corpus on this)" in _footer(answer_of(data))
