"""Generation evaluation: configs, inputs, a run against the Ollama-protocol test server, resume, judges."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.backends.base import GenerationOptions
from rag.backends.ollama import OllamaBackend
from rag.eval.generation import (
    Example,
    GenConfig,
    GenerationError,
    load_examples,
    parse_config,
    parse_configs,
    read_results,
    run_generation,
)
from rag.eval.judge import Judge, parse_verdict

try:
    from tests.ollama_server import ModelBehavior, OllamaServer
except ImportError:  # pragma: no cover - run from inside tests/
    from ollama_server import ModelBehavior, OllamaServer

EXAMPLES = [
    Example("How can I fall asleep faster?", "Keep a fixed wake-up time and a dark, cool bedroom."),
    Example("Why is the sky blue?", "Air scatters blue light more than red light (Rayleigh scattering)."),
    Example(
        "And at sunset?",
        "Light crosses more air, so the blue is scattered away and reds remain.",
        history=[
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": "Scattering."},
        ],
    ),
]


def _no_nan(text: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def server():
    behaviors = {
        "llama3.2": ModelBehavior(),
        "qwen2.5": ModelBehavior(reply="Short answer: it depends on light and air."),
        "judge-good": ModelBehavior(reply='Sure! {"faithfulness": 4, "relevance": 5}'),
        "judge-bad": ModelBehavior(reply="I would say this answer is quite good overall."),
    }
    with OllamaServer(behaviors) as s:
        yield s


def ollama_answer_fn(url: str):
    """An answer_fn calling the test server directly (no Shvayambhu); confidence from token probabilities."""

    def answer(prompt: str, history: list[dict[str, str]], config: GenConfig) -> dict:
        backend = OllamaBackend(url, config.model or "llama3.2")
        gen = backend.generate([*history, {"role": "user", "content": prompt}], GenerationOptions(max_tokens=40))
        conf = sum(gen.probs) / len(gen.probs) if gen.probs else None
        sources = [{"id": "s1", "score": 0.8, "prompt": "sky colour", "response": "Rayleigh scattering."}]
        return {
            "answer": gen.text,
            "confidence": conf,
            "backend": "ollama",
            "model": gen.model,
            "sources": sources if config.retrieval else [],
            "timings": {"generate": gen.timings["wall_ms"]},
        }

    return answer


def test_parse_config():
    c = parse_config("rag=backend=ollama,model=llama3.2:1b,k=3,retrieval=on,memory=off")
    assert c == GenConfig("rag", "ollama", "llama3.2:1b", 3, True, False)
    assert parse_config("plain=retrieval=no").retrieval is False
    assert parse_config("base") == GenConfig("base")
    assert [c.name for c in parse_configs([])] == ["default"]
    for bad, why in (
        ("=k=1", "NAME"),
        ("a=k=x", "integer"),
        ("a=colour=red", "unknown option"),
        ("a=backend=gpt", "backend"),
        ("a=retrieval=maybe", "on or off"),
        ("a=k", "key=value"),
    ):
        with pytest.raises(GenerationError, match=why):
            parse_config(bad)
    with pytest.raises(GenerationError, match="unique"):
        parse_configs(["a=k=1", "a=k=2"])


def test_load_examples_in_reader_formats(tmp_path: Path):
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a colour"},
            {"role": "assistant", "content": "Blue."},
        ]
    }
    lines = [
        json.dumps(chat),
        json.dumps({"instruction": "Add", "input": "2 and 3", "output": "5"}),
        "{broken",
        json.dumps({"prompt": "Then?", "response": "Then we stop.", "history": [{"role": "user", "content": "x"}]}),
        json.dumps({"prompt": "Then?", "response": "Then we stop.", "history": [{"role": "user", "content": "x"}]}),
        json.dumps({"prompt": "held", "response": "out", "split": "heldout"}),
    ]
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# Tea\n\nSteep green tea at 80 degrees.\n", encoding="utf-8")
    examples, problems = load_examples([tmp_path])
    by_prompt = {e.prompt: e for e in examples}
    assert by_prompt["Name a colour"].history == chat["messages"][:3]  # system + first exchange
    assert by_prompt["Hi"].history == [{"role": "system", "content": "Be brief."}]
    assert by_prompt["Add\n\n2 and 3"].reference == "5"
    assert by_prompt["Then?"].history == [{"role": "user", "content": "x"}]
    assert any("Steep green tea" in e.reference for e in examples)
    assert any(p.startswith(f"{f}:3: invalid JSON") for p in problems)
    assert any("1 duplicate" in p for p in problems)
    held, _ = load_examples([f], split="heldout")
    assert [e.prompt for e in held] == ["held"]
    with pytest.raises(GenerationError, match="no such file"):
        load_examples([tmp_path / "absent.jsonl"])


def test_default_input_is_the_bundled_heldout_split():
    examples, _ = load_examples(None, limit=3)
    assert len(examples) == 3 and all(e.reference for e in examples)


def test_two_configurations_write_every_file_and_resume(server, embedder, tmp_path: Path):
    configs = parse_configs(["llama=backend=ollama,model=llama3.2", "qwen=backend=ollama,model=qwen2.5,retrieval=off"])
    judge = Judge.ollama("judge-good", server.url, timeout=10)
    out = tmp_path / "run"
    run = run_generation(
        EXAMPLES,
        configs,
        out,
        answer_fn=ollama_answer_fn(server.url),
        judge=judge,
        embedder=embedder,
        input_name="fixture",
    )
    assert (run.answered, run.skipped, run.errors) == (6, 0, 0)
    for name in ("results.jsonl", "summary.json", "report.md", "metrics.png", "calibration.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    rows, bad = read_results(out / "results.jsonl")
    assert len(rows) == 6 and bad == 0
    row = next(r for r in rows if r["config"] == "llama" and r["turns_before"] == 2)
    assert {"chrf", "rouge_l", "embed_sim", "confidence", "latency_ms", "bytes_per_s"} <= set(row["metrics"])
    assert row["judge"]["faithfulness"] == 4 and row["judge"]["relevance"] == 5
    qwen = next(r for r in rows if r["config"] == "qwen")
    assert qwen["judge"]["faithfulness"] is None  # retrieval off: no sources, faithfulness not applicable

    summary = _no_nan((out / "summary.json").read_text())
    assert set(summary["configs"]) == {"llama", "qwen"}
    stat = summary["configs"]["llama"]["metrics"]["chrf"]
    assert stat["n"] == 3 and stat["lo"] <= stat["mean"] <= stat["hi"]
    assert summary["configs"]["qwen"]["judge"]["faithfulness_not_applicable"] == 3
    report = (out / "report.md").read_text()
    assert "| metric | llama | qwen |" in report and "chrF" in report and "![metrics](metrics.png)" in report

    again = run_generation(
        EXAMPLES, configs, out, answer_fn=ollama_answer_fn(server.url), embedder=embedder, plots=False
    )
    assert (again.answered, again.skipped) == (0, 6)
    # a run killed mid-line: the broken line is skipped and the missing answer is made again
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    resumed = run_generation(
        EXAMPLES, configs, out, answer_fn=ollama_answer_fn(server.url), embedder=embedder, plots=False
    )
    assert (resumed.answered, resumed.skipped) == (1, 5)
    rows, bad = read_results(out / "results.jsonl")
    assert bad == 1 and len(rows) == 6 and resumed.summary["unreadable_result_lines"] == 1

    changed = parse_configs(["llama=backend=ollama,model=llama3.2,k=9"])
    with pytest.raises(GenerationError, match="was .* in this run"):
        run_generation(EXAMPLES, changed, out, answer_fn=ollama_answer_fn(server.url), embedder=embedder)


def test_a_judge_that_answers_badly_is_counted(server, embedder, tmp_path: Path):
    judge = Judge.ollama("judge-bad", server.url, timeout=10, retries=1)
    judge.backoff_s = 0.0
    run = run_generation(
        EXAMPLES[:2],
        [GenConfig("only", model="llama3.2")],
        tmp_path / "bad",
        answer_fn=ollama_answer_fn(server.url),
        judge=judge,
        embedder=embedder,
        plots=False,
    )
    assert run.answered == 2 and run.errors == 0  # the answers are kept, only the verdicts are missing
    j = run.summary["configs"]["only"]["judge"]
    assert j == {
        "judged": 0,
        "failed": 2,
        "parse_failures": 4,
        "timeouts": 0,
        "errors": 0,
        "faithfulness_not_applicable": 0,
    }
    assert "judge_relevance" not in run.summary["configs"]["only"]["metrics"]
    summary = _no_nan((tmp_path / "bad" / "summary.json").read_text())
    assert summary["configs"]["only"]["judge"]["failed"] == 2
    assert "judge failed | 2" in (tmp_path / "bad" / "report.md").read_text()


def test_judge_retries_parse_failures_and_timeouts():
    replies = iter(
        [
            "no idea",
            '{"faithfulness": 7, "relevance": 2}',
            TimeoutError("timed out"),
            'Faithfulness: 3\nRelevance: "4"',
        ]
    )

    def gen(messages):
        r = next(replies)
        if isinstance(r, Exception):
            raise r
        return r

    v = Judge(gen, retries=3).judge("q", "a", [{"prompt": "p", "response": "r"}])
    assert (v.faithfulness, v.relevance, v.attempts, v.parse_failures, v.timeouts) == (3.0, 4.0, 4, 2, 1)
    assert v.ok and not any(isinstance(x, float) and math.isnan(x) for x in v.to_dict().values())
    v = Judge(lambda m: "???", retries=0).judge("q", "a")
    assert v.relevance is None and v.parse_failures == 1 and "no verdict" in v.error

    def boom(messages):
        raise ConnectionError("refused")

    v = Judge(boom, retries=1).judge("q", "a")
    assert v.errors == 2 and "ConnectionError" in v.error
    assert parse_verdict('{"Relevance": "4/5"}', ["relevance"]) == {"relevance": 4.0}


def test_answer_errors_are_recorded_then_retried(embedder, tmp_path: Path):
    def failing(prompt, history, config):
        raise ConnectionError("Ollama is not running")

    run = run_generation(
        EXAMPLES,
        [GenConfig("down")],
        tmp_path / "err",
        answer_fn=failing,
        embedder=embedder,
        max_consecutive_errors=2,
        plots=False,
    )
    assert run.errors == 2 and run.summary["configs"]["down"]["aborted"].startswith("stopped after 2 errors")
    assert "Ollama is not running" in (tmp_path / "err" / "report.md").read_text()

    def ok(prompt, history, config):  # a NaN confidence and object sources are normalised, not written raw
        source = SimpleNamespace(id="s1", score=0.5, prompt=prompt, response="")
        return {"answer": "Keep a fixed wake-up time.", "confidence": float("nan"), "sources": [source]}

    again = run_generation(
        EXAMPLES, [GenConfig("down")], tmp_path / "err", answer_fn=ok, embedder=embedder, plots=False
    )
    assert (again.answered, again.skipped, again.summary["configs"]["down"]["errors"]) == (3, 0, 0)
    rows = [_no_nan(line) for line in (tmp_path / "err" / "results.jsonl").read_text().splitlines()]
    latest = [r for r in rows if not r["error"]]
    assert all(r["metrics"]["confidence"] is None and r["leak"] for r in latest)
    assert latest[0]["sources"] == [{"id": "s1", "score": 0.5, "prompt": latest[0]["prompt"]}]
