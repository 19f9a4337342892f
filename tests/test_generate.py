"""Corpus generation against the fake Ollama server: retries, drops, rejections, crash safety, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ingest.records import Record
from ingest.validate import check_record
from rag.cli import main as cli_main
from rag.synthesis import SynthesisConfig, SynthesisError, synthesize
from rag.synthesis.jsonl import JsonlAppender, rejected_path, repair_jsonl
from rag.synthesis.prompts import CATEGORIES, job_key, load_prompt_file, plan_jobs, select_prompts, shipped_prompts
from rag.synthesis.run import collect_prompts

try:
    from tests.ollama_server import ModelBehavior, OllamaServer, echo_reply, placeholder_reply
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from ollama_server import ModelBehavior, OllamaServer, echo_reply, placeholder_reply

from tests.waiting import wait_while_alive

REPO = Path(__file__).resolve().parent.parent


def cli_generate(out: Path, models: str, *, ingest_fn: Any = None, **options: Any) -> int:
    """`shvayambhu generate` through the real CLI in this process; returns its exit code. `ingest_fn` stands in
    for the store's ingest (the CLI's `--ingest` calls it with the output path)."""
    argv = ["generate", "--out", str(out), "--models", models, "--no-progress"]
    flags = {"json_output": "--json", "ingest": "--ingest"}
    for key, value in options.items():
        if key in flags:
            argv += [flags[key]] if value else []
        elif key != "progress":
            argv += [f"--{key.replace('_', '-')}", str(value)]
    with pytest.MonkeyPatch.context() as mp:
        if ingest_fn is not None:
            mp.setattr("rag.cli.synthesis.assistant", lambda: SimpleNamespace(ingest=ingest_fn))
        try:
            cli_main(argv)
        except SystemExit as e:
            return int(e.code or 0)
    return 0


GOOD = "A real, specific answer that says something useful about the question asked."


def cfg(server: OllamaServer, out: Path, models: list[str], **kw: object) -> SynthesisConfig:
    base: dict[str, object] = dict(
        n=6, seed=1, host=server.url, concurrency=4, backoff=0.01, max_backoff=0.05, progress=False, timeout=5.0
    )
    base.update(kw)
    return SynthesisConfig(out=out, models=models, **base)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_one_valid_line_per_pair(out: Path, expected: set[tuple[str, str]]) -> None:
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    rows = lines(out)
    keys = Counter(job_key(r["prompt"], r["model"]) for r in rows)
    assert set(keys) == expected and max(keys.values()) == 1
    for r in rows:
        rec = Record(r["prompt"], r["response"], model=r["model"], category=r.get("category"), meta=r["meta"])
        assert check_record(rec) is None


def planned_keys(config: SynthesisConfig) -> set[tuple[str, str]]:
    items = select_prompts(collect_prompts(config), config.n, config.seed or 0)
    return {j.key for j in plan_jobs(items, config.models, config.per_prompt, config.seed or 0)}


# ---------------------------------------------------------------------------------------------------------
# Prompts


def test_shipped_prompts_are_real_and_varied() -> None:
    items = shipped_prompts()
    by_cat = Counter(i.category for i in items)
    assert set(by_cat) == set(CATEGORIES)
    for path in sorted((REPO / "ingest" / "data" / "prompts").glob("*.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        assert len(set(spec["topics"])) >= 20 and len(set(spec["templates"])) >= 10, path.name
        assert all("{topic}" in t for t in spec["templates"])
    prompts = [i.prompt for i in items]
    assert len(set(prompts)) == len(prompts)
    assert all(check_record(Record(p, GOOD)) is None for p in prompts)
    assert all("{" not in p and "}" not in p for p in prompts)


def test_prompt_files_sampling_and_plan(tmp_path: Path) -> None:
    jl = tmp_path / "p.jsonl"
    jl.write_text(
        '{"prompt": "What is rain?", "category": "science"}\n{"prompt": "Why sleep?"}\n'
        '{"instruction": "Summarise", "input": "The cat sat."}\n',
        encoding="utf-8",
    )
    txt = tmp_path / "p.txt"
    txt.write_text("# my prompts\nWhat is rain?\n\nHow do bees fly?\n", encoding="utf-8")
    items = load_prompt_file(jl) + load_prompt_file(txt)
    assert [i.prompt for i in items][:3] == ["What is rain?", "Why sleep?", "Summarise\n\nThe cat sat."]
    assert items[0].category == "science" and items[0].source == "p.jsonl:1"
    assert [i.prompt for i in select_prompts(items, None, 0)] == [
        "What is rain?",
        "Why sleep?",
        "Summarise\n\nThe cat sat.",
        "How do bees fly?",
    ]
    many = shipped_prompts()
    a, b = select_prompts(many, 50, 7), select_prompts(many, 50, 7)
    assert [i.prompt for i in a] == [i.prompt for i in b] and len(a) == 50
    assert [i.prompt for i in select_prompts(many, 50, 8)] != [i.prompt for i in a]
    plan = plan_jobs(a, ["m1", "m2", "m3"], 2, 7)
    assert len(plan) == 100 and Counter(j.model for j in plan).keys() <= {"m1", "m2", "m3"}
    again = plan_jobs(a, ["m1", "m2", "m3"], 2, 7)
    assert [(j.item.prompt, j.model) for j in plan] == [(j.item.prompt, j.model) for j in again]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"nope": 1}\n', encoding="utf-8")
    with pytest.raises(SynthesisError, match=r"bad.jsonl:2"):
        load_prompt_file(bad)


# ---------------------------------------------------------------------------------------------------------
# Runs


def test_generates_validated_records_with_meta(tmp_path: Path) -> None:
    with OllamaServer(["m1", "m2:7b"]) as s:
        c = cfg(
            s,
            tmp_path / "out.jsonl",
            ["m1", "m2:7b"],
            temperature=0.6,
            top_p=0.9,
            num_predict=200,
            system="You are a careful assistant.",
            categories=["science", "ethics"],
        )
        summary = synthesize(c)
        assert (summary.planned, summary.done, summary.failed, summary.rejected) == (12, 12, 0, 0)
        assert not rejected_path(c.out).exists()  # created by the first rejection only
        assert_one_valid_line_per_pair(c.out, planned_keys(c))
        rows = lines(c.out)
        assert {r["category"] for r in rows} <= {"science", "ethics"}
        assert {r["model"] for r in rows} == {"m1:latest", "m2:7b"}
        meta = rows[0]["meta"]
        assert meta["options"] == {"temperature": 0.6, "top_p": 0.9, "seed": 1, "num_predict": 200}
        assert meta["system"] == "You are a careful assistant." and "{topic}" in meta["template"]
        assert {"total_ms", "eval_tokens"} <= set(meta["timings"]) and meta["done_reason"] == "stop"
        body = s.bodies("/api/chat")[0]
        assert body["messages"][0] == {"role": "system", "content": "You are a careful assistant."}
        assert body["options"] == {"temperature": 0.6, "top_p": 0.9, "seed": 1, "num_predict": 200}
        assert body["stream"] is False
        again = synthesize(c)  # resume: everything is done, nothing is asked
        assert (again.skipped, again.done) == (12, 0) and len(s.bodies("/api/chat")) == 12


def test_concurrency_limit_is_never_exceeded(tmp_path: Path) -> None:
    def gated(prompt: str, request: dict[str, Any]) -> str:
        # the first answers are held until 3 requests are in flight: a 4th would arrive meanwhile if allowed
        deadline = time.monotonic() + 30
        while s.max_in_flight < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return GOOD

    with OllamaServer({"m1": ModelBehavior(delay=0.3, reply=gated), "m2": ModelBehavior(delay=0.3, reply=gated)}) as s:
        summary = synthesize(cfg(s, tmp_path / "o.jsonl", ["m1", "m2"], n=6, concurrency=3, timeout=60.0))
        assert summary.done == 12 and s.max_in_flight == 3, f"{s.max_in_flight} at once (want 3, never more)"


def test_slow_answers_and_timeouts(tmp_path: Path) -> None:
    slow = ModelBehavior(delay=0.2)  # 15x inside the timeout: answers even on a loaded machine
    stuck = ModelBehavior(first_byte_delay=600.0)  # ends when the server stops
    with OllamaServer({"slow": slow, "stuck": stuck}) as s:
        c = cfg(s, tmp_path / "o.jsonl", ["slow", "stuck"], n=3, timeout=3.0, retries=1, concurrency=6)
        summary = synthesize(c)
        assert summary.done == 3 and summary.failed == 3 and summary.failure_kinds == {"timeout": 3}
        assert summary.retries >= 3 and "within 3 s" in summary.failures[0]
        assert {r["model"] for r in lines(c.out)} == {"slow:latest"}


def test_server_errors_are_retried(tmp_path: Path) -> None:
    with OllamaServer({"m1": ModelBehavior(fail_times=3, fail_status=500)}) as s:
        summary = synthesize(cfg(s, tmp_path / "o.jsonl", ["m1"], n=5))
        assert summary.done == 5 and summary.failed == 0 and summary.retries == 3
        assert len(s.bodies("/api/chat")) == 8
    with OllamaServer({"m1": ModelBehavior(fail_times=50, fail_status=503)}) as s:
        summary = synthesize(cfg(s, tmp_path / "p.jsonl", ["m1"], n=2, retries=2, concurrency=1))
        assert summary.failed == 2 and summary.failure_kinds == {"server": 2}
        assert "HTTP 503" in summary.failures[0]
        assert len(s.bodies("/api/chat")) == 6  # 1 try + 2 retries each


def test_dropped_connections_mid_stream_are_retried(tmp_path: Path) -> None:
    with OllamaServer({"m1": ModelBehavior(drop_times=3, drop_after_chunks=3)}) as s:
        c = cfg(s, tmp_path / "o.jsonl", ["m1"], n=5, stream=True)
        summary = synthesize(c)
        assert summary.done == 5 and summary.retries == 3
        assert all(b["stream"] is True for b in s.bodies("/api/chat"))
        assert_one_valid_line_per_pair(c.out, planned_keys(c))
    with OllamaServer({"m1": ModelBehavior(drop_times=2)}) as s:  # and without streaming
        summary = synthesize(cfg(s, tmp_path / "p.jsonl", ["m1"], n=3, stream=False))
        assert summary.done == 3 and summary.retries == 2


def test_model_not_pulled_others_continue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with OllamaServer(["m1"]) as s:
        c = cfg(s, tmp_path / "o.jsonl", ["m1", "ghost"], n=4)
        summary = synthesize(c)
        assert summary.done == 4 and summary.failed == 4
        assert summary.model_errors == {
            "ghost:latest": f"Model 'ghost' is not pulled on {s.url}: run `ollama pull ghost`"
        }
        assert all(b["model"] == "m1" for b in s.bodies("/api/chat"))
        code = cli_generate(c.out, "m1,ghost", n=4, seed=1, ollama_host=s.url, progress=False)
        assert code == 1 and "ollama pull ghost" in capsys.readouterr().out


def test_model_removed_mid_run(tmp_path: Path) -> None:
    with OllamaServer({"m1": ModelBehavior(delay=0.02), "m2": ModelBehavior(delay=0.02)}) as s:

        def on_progress(summary: object) -> None:
            s.remove_model("m2")

        summary = synthesize(cfg(s, tmp_path / "o.jsonl", ["m1", "m2"], n=10, concurrency=2), on_progress=on_progress)
        assert summary.done + summary.failed == 20 and summary.failed >= 8
        assert "ollama pull m2" in summary.model_errors["m2:latest"]
        assert summary.done >= 10
        assert len([b for b in s.bodies("/api/chat") if b["model"] == "m2"]) <= 4  # given up at once


def test_placeholder_and_echo_answers_are_rejected(tmp_path: Path) -> None:
    behaviors = {
        "echo": ModelBehavior(reply=echo_reply),
        "ph": ModelBehavior(reply=placeholder_reply),
        "todo": ModelBehavior(reply="TODO: write the real answer"),
        "ok": ModelBehavior(),
    }
    with OllamaServer(behaviors) as s:
        c = cfg(s, tmp_path / "o.jsonl", list(behaviors), n=3)
        summary = synthesize(c)
        assert (summary.done, summary.rejected) == (3, 9)
        assert {r["model"] for r in lines(c.out)} == {"ok:latest"}
        rejected = lines(rejected_path(c.out))
        assert rejected_path(c.out).name == "o.rejected.jsonl"
        reasons = {r["model"]: r["reason"] for r in rejected}
        assert reasons["echo:latest"] == "response only echoes the prompt"
        assert reasons["ph:latest"].startswith("placeholder in response: template variable '{response}'")
        assert reasons["todo:latest"].startswith("placeholder in response: TODO marker")
        assert all(r["prompt"] and "response" in r for r in rejected)
        asked = len(s.bodies("/api/chat"))
        again = synthesize(c)  # rejected pairs count as done
        assert again.skipped == 12 and len(s.bodies("/api/chat")) == asked


def test_torn_last_line_is_repaired(tmp_path: Path) -> None:
    with OllamaServer(["m1"]) as s:
        c = cfg(s, tmp_path / "o.jsonl", ["m1"], n=5)
        synthesize(c)
        whole = c.out.read_bytes()
        torn = b'{"prompt": "What is the Big Bang?", "response": "It was'
        c.out.write_bytes(whole + torn)
        assert repair_jsonl(c.out) == len(torn) and c.out.read_bytes() == whole
        c.out.write_bytes(whole + b"\x00\x00\x00\x00\n")  # zero-filled tail after a power loss
        assert repair_jsonl(c.out) == 5 and c.out.read_bytes() == whole
        last = whole.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        cut = whole[: len(whole) - 1 - len(last) // 2]  # the last record torn in half
        c.out.write_bytes(cut)
        c2 = cfg(s, c.out, ["m1"], n=6)
        summary = synthesize(c2)
        assert summary.repaired_bytes == len(cut) - (len(whole) - len(last) - 1)
        assert summary.skipped == 4 and summary.done == 2
        assert_one_valid_line_per_pair(c.out, planned_keys(c2))


def test_kill_9_mid_run_then_rerun(tmp_path: Path) -> None:
    out = tmp_path / "corpus.jsonl"
    with OllamaServer({"m1": ModelBehavior(delay=0.1), "m2": ModelBehavior(delay=0.1)}) as s:
        c = cfg(s, out, ["m1", "m2"], n=30, concurrency=4, fsync_interval=0.0)
        code = (
            "from pathlib import Path\n"
            "from rag.synthesis import SynthesisConfig, synthesize\n"
            f"synthesize(SynthesisConfig(out=Path({str(out)!r}), models=['m1', 'm2'], n=30, seed=1, "
            f"host={s.url!r}, concurrency=4, progress=False, fsync_interval=0.0))\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
        try:
            deadline = time.time() + 30
            while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 8):
                assert proc.poll() is None, "generation ended before it could be killed"
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        written = out.read_bytes().count(b"\n")
        assert 8 <= written < 60
        summary = synthesize(c)
        assert summary.skipped == written and summary.done == 60 - written and summary.failed == 0
        assert_one_valid_line_per_pair(out, planned_keys(c))


def test_unreachable_server_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = SynthesisConfig(out=tmp_path / "o.jsonl", models=["m1"], n=2, host=f"127.0.0.1:{port}", progress=False)
    with pytest.raises(SynthesisError, match="Cannot reach Ollama at http://127.0.0.1:"):
        synthesize(c)
    assert cli_generate(c.out, "m1", n=2, ollama_host=f"127.0.0.1:{port}", json_output=True) == 1  # data error
    assert "Cannot reach Ollama" in json.loads(capsys.readouterr().out)["error"]
    with pytest.raises(SynthesisError, match="concurrency"):
        synthesize(SynthesisConfig(out=c.out, models=["m1"], concurrency=0))
    holder = JsonlAppender(c.out, lock=True)  # another generate writing the same output
    try:
        with pytest.raises(SynthesisError, match="another `shvayambhu generate` is writing"):
            synthesize(c)
    finally:
        holder.close()


def test_cli_json_ingest_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "mine.txt"
    prompts.write_text("How do tides work?\nWhy do cats purr?\n", encoding="utf-8")
    calls: list[list[Path]] = []

    def fake_ingest(paths: list[Path]) -> dict:
        calls.append(paths)
        return {"added": 2}

    with OllamaServer(["m1"]) as s:
        code = cli_generate(
            tmp_path / "o.jsonl",
            "m1",
            prompts=prompts,
            ollama_host=s.url,
            json_output=True,
            ingest=True,
            ingest_fn=fake_ingest,
        )
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["done"] == 2 and report["ingest"] == {"added": 2}
        assert calls == [[tmp_path / "o.jsonl"]]

        def broken(paths: list[Path]) -> None:
            raise RuntimeError("no store")

        c = cfg(s, tmp_path / "p.jsonl", ["m1"], n=3, ingest=True, progress=True)
        summary = synthesize(c, ingest_fn=broken)
        assert summary.done == 3 and "no store" in summary.ingest["error"]


def test_jobs_spread_over_several_hosts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens here once the socket closes
    fast = {"m1": ModelBehavior(delay=0.02), "m2": ModelBehavior(delay=0.02)}
    with OllamaServer(fast) as a, OllamaServer({"m1": ModelBehavior(delay=0.05)}) as b:
        c = SynthesisConfig(
            out=tmp_path / "o.jsonl",
            models=["m1", "m2"],
            n=10,
            seed=1,
            host=f"{a.url},{b.url},{dead}",
            concurrency=2,
            progress=False,
        )
        summary = synthesize(c)
        assert summary.done == 20 and summary.failed == 0
        assert list(summary.host_errors) == [f"http://{dead}"]  # reported, not fatal
        on_a = [body["model"] for body in a.bodies("/api/chat")]
        on_b = [body["model"] for body in b.bodies("/api/chat")]
        assert on_b and set(on_b) == {"m1"}  # b only gets what it has
        assert on_a.count("m2") == 10 and len(on_a) + len(on_b) == 20
        assert a.max_in_flight <= 2 and b.max_in_flight <= 2  # each host keeps its own concurrency


PAUSING_MLX_RUN = """
import sys, time
from pathlib import Path
import rag.backends.mlx as mlx_backend
from rag.synthesis import SynthesisConfig, synthesize

out, prompts, marker = sys.argv[1:4]
real = mlx_backend.load_mlx_backend


class Pausing:
    # The real MLX backend; at its third batch (two batches written) it says so and waits to be killed.
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def generate_batch(self, batch, options):
        self.calls += 1
        if self.calls == 3:
            Path(marker).touch()
            time.sleep(600)
        return self.inner.generate_batch(batch, options)


mlx_backend.load_mlx_backend = lambda spec=None, **kw: Pausing(real(spec, **kw))
synthesize(SynthesisConfig(out=Path(out), models=[], backend="mlx", prompts=Path(prompts), num_predict=16,
                           concurrency=2, temperature=0.0, progress=False))
"""


@pytest.mark.slow
def test_mlx_generation_resumes_after_kill_9(tmp_path: Path) -> None:
    topics = ["tides", "rainbows", "volcanoes", "bread", "magnets", "bees", "glass", "clouds"]
    questions = [f"In two sentences, why do people study {t}?" for t in topics]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(questions) + "\n", encoding="utf-8")
    out, marker = tmp_path / "o.jsonl", tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSING_MLX_RUN, str(out), str(prompts), str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # the child cannot finish: it pauses after two batches until killed
        wait_while_alive(proc, marker.exists, "the generation to pause after two batches", timeout=600)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    written = lines(out) + lines(rejected_path(out)) if rejected_path(out).exists() else lines(out)
    assert len(written) == 4  # two whole batches of two (kept or rejected), nothing torn
    code = cli_generate(out, "", backend="mlx", prompts=prompts, num_predict=16, concurrency=2, temperature=0.0)
    assert code == 0
    rows = lines(out) + (lines(rejected_path(out)) if rejected_path(out).exists() else [])
    assert sorted(r["prompt"] for r in rows) == sorted(questions)  # each prompt once: resumed, nothing redone
    assert {r["model"] for r in rows} == {"mlx:SmolLM2-135M-Instruct"}
    assert any(r.get("response") for r in lines(out))
