"""The backend contract: a backend states what it needs in its `PromptProfile` and the layer honours it, so a new
backend is a class and one `register_backend` call, nothing outside `rag/backends/` (here: this file alone)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.backends import select
from rag.backends.base import BackendError, Chunk, Generation, GenerationOptions, PromptProfile
from rag.consciousness.workspace import Workspace

ON = "Why is the sky blue?"
OFF = "What is the torque spec for the cylinder head bolts on a 2004 Honda Civic?"
BUDGET = 60  # words
CLIP = 80  # bytes of each exemplar's answer


def words(text: str) -> int:
    return len(text.split())


class WordBackend:
    """Counts its prompt in words, reads only exemplars (each answer clipped), lays the prompt out its own way,
    asks with its own sampling options and abstains when the evidence is weak."""

    name = "words"

    def __init__(self, settings: Any, model: str | None = None) -> None:
        self.model = model or "words-1"
        self.calls: list[tuple[list[dict[str, str]], GenerationOptions]] = []
        self.profile = PromptProfile(
            unit="tokens",
            budget=BUDGET,
            measure=words,
            count=lambda messages: sum(words(m["content"]) for m in messages) + 1,  # +1: its own "template"
            render=self.render,
            base_messages=self.base_messages,
            workspace_kinds=("exemplar",),
            exemplar_bytes=CLIP,
            options=GenerationOptions(temperature=0.0, seed=3, max_tokens=7),
            abstain_when_unsure=True,
        )

    def render(self, ws: Workspace | None, question: str, **_: Any) -> list[dict[str, str]]:
        blocks = [c.text for c in (ws.winners if ws is not None else [])]
        return [{"role": "user", "content": "\n--\n".join([*blocks, f"ASK {question}"])}]

    def base_messages(self, question: str, **_: Any) -> list[dict[str, str]]:
        return self.render(None, question)

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation:
        self.calls.append((messages, options))
        return Generation(text="Sunlight scatters off the air [1].", model=self.model, backend=self.name)

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[Chunk]:
        gen = self.generate(messages, options)
        yield Chunk(gen.text)
        yield Chunk("", done=True, generation=gen)

    def available(self) -> bool:
        return True


@pytest.fixture
def words_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """WordBackend registered as `words` for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(select, "BACKENDS", dict(select.BACKENDS))
    select.register_backend("words", WordBackend)


def test_a_registered_backend_answers_through_the_layer_with_its_profile_honoured(words_backend, make_assistant):
    a = make_assistant(backend="words", workspace={"budget_bytes": 6000, "budget_tokens": 500})
    answer = a.ask(ON, use_memory=False)
    be = a.backend()
    assert isinstance(be, WordBackend) and answer.backend == "words" and answer.model == "words-1"
    ws = answer.workspace
    # its budget, in its unit, measured by its own count (not [workspace] budget_bytes or budget_tokens)
    assert ws.unit == "tokens" and ws.budget == BUDGET
    assert ws.used == be.profile.count(answer.messages) <= BUDGET
    assert any(c.kind == "exemplar" for c in ws.losers)  # the 60-word budget is what made them lose
    # only the kinds it reads compete: no self-model facts, though the layer pins them for every other backend
    assert {c.kind for c in ws.winners + ws.losers} == {"exemplar"}
    # each exemplar's answer clipped to the bytes it was trained on
    clipped = [c for c in ws.winners if len(c.meta["hit"].response.encode()) > CLIP]
    assert clipped and all(c.meta["hit"].response not in c.text for c in clipped)
    # its own layout, exactly as it rendered the winners, is what it was called with
    messages, options = be.calls[-1]
    assert messages == answer.messages == be.render(ws, ON)
    assert messages[0]["content"].endswith(f"ASK {ON}") and "<exemplar" not in messages[0]["content"]
    # its own sampling options, not the [ollama] ones the fixture sets (temperature 0, seed 7)
    assert (options.seed, options.max_tokens) == (3, 7)
    assert answer.sources and answer.answer.startswith("Sunlight scatters")


def test_a_registered_backend_that_abstains_is_not_called_on_weak_evidence(words_backend, make_assistant):
    a = make_assistant(backend="words")
    off = a.ask(OFF, use_memory=False)
    assert off.done_reason == "abstain" and off.low_confidence and off.answer.startswith("My corpus has nothing")
    assert a.backend().calls == []  # the layer answered for it
    assert "".join(a.stream(OFF, use_memory=False)) == off.answer


def test_default_profile_is_the_layers_full_prompt_in_the_workspace_budget(monkeypatch, make_assistant):
    """A backend that asks for nothing gets what Ollama gets: the full prompt, self-model included, in bytes
    unless [workspace] budget_tokens is set."""

    class Plain(WordBackend):
        name = "plain"

        def __init__(self, settings: Any, model: str | None = None) -> None:
            super().__init__(settings, model)
            self.profile = PromptProfile()

    monkeypatch.setattr(select, "BACKENDS", dict(select.BACKENDS))
    select.register_backend("plain", Plain)
    bytes_ws = make_assistant(backend="plain", workspace={"budget_bytes": 3000}).ask(ON, use_memory=False).workspace
    assert (bytes_ws.unit, bytes_ws.budget) == ("bytes", 3000) and any(c.kind == "self" for c in bytes_ws.winners)
    tokens = make_assistant(backend="plain", workspace={"budget_tokens": 700}).ask(ON, use_memory=False)
    assert (tokens.workspace.unit, tokens.workspace.budget) == ("tokens", 700)
    assert "<exemplar" in tokens.messages[-1]["content"]  # the layer's own layout


def test_registration_and_profiles_refuse_what_the_layer_cannot_use(monkeypatch):
    monkeypatch.setattr(select, "BACKENDS", dict(select.BACKENDS))
    for name in ("auto", "ollama", "", " words"):
        with pytest.raises(BackendError):
            select.register_backend(name, WordBackend)
    with pytest.raises(BackendError, match="unknown backend 'nope': use auto, ollama, mlx, blt"):
        select.select_backend(None, "nope")  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="style must be one of full, compact"):
        PromptProfile(style="tiny")
    with pytest.raises(BackendError, match="unit must be one of bytes, tokens"):
        PromptProfile(unit="words")
    with pytest.raises(BackendError, match="both render and base_messages"):
        PromptProfile(render=lambda ws, q, **_: [])
    with pytest.raises(BackendError, match="budget must be at least 1"):
        PromptProfile(budget=0)


def test_the_pipeline_reads_no_backend_name_setting_or_attribute_probe():
    """What the pipeline knows of a backend is its protocol and profile (import-linter keeps it from importing
    an implementation; this keeps it from naming one)."""
    source = (Path(__file__).parent.parent / "rag" / "pipeline.py").read_text(encoding="utf-8")
    found = re.findall(r"getattr\(|hasattr\(|settings\.(?:mlx|blt|ollama)\b|[\"'](?:mlx|blt|ollama)[\"']", source)
    assert found == []


def test_python_m_rag_serve_takes_the_same_flags_as_shvayambhu_serve():
    """`python -m rag.serve` parses its flags without the CLI (rag.serve sits below it): the same set."""
    import typer.main

    from rag.cli import app
    from rag.serve.command import parser

    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    cli = {o for p in serve.params for o in p.opts if o.startswith("--")} - {"--help"}
    ours = {o for a in parser()._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
    assert cli == ours
