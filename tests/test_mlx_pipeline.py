"""The MLX backend under the consciousness layer: a prompt budgeted in its own tokens, the `auto` order, and
what `status` and `ask` say when the bundled model is missing."""

from __future__ import annotations

import importlib.metadata

import pytest

from rag.backends.gguf import INSTALL_HINT


def test_prompt_holds_the_exemplars_and_is_budgeted_in_real_tokens(make_assistant):
    a = make_assistant(backend="mlx", mlx={"max_tokens": 12, "prompt_tokens": 400, "prompt_style": "full"})
    answer = a.ask("Why is the sky blue?", use_memory=False, show_prompt=True)
    backend = a.backend()
    ws = answer.workspace
    assert ws.unit == "tokens" and ws.budget == 400
    assert ws.used == backend.count_tokens(answer.messages) <= 400  # counted by the model's own tokenizer
    user = answer.messages[-1]["content"]
    assert answer.sources and all(s.prompt in user for s in answer.sources)  # the exemplars are in the prompt
    assert any(c.kind == "exemplar" for c in ws.losers)  # ...and the budget made some of them lose
    assert answer.backend == "mlx" and answer.answer


def test_auto_prefers_ollama_then_mlx_then_blt(make_assistant, fake_ollama, monkeypatch):
    assert make_assistant(backend="auto").backend().name == "ollama"  # its server answers
    down = {"host": "http://127.0.0.1:9"}  # nothing listens on the discard port
    assert make_assistant(backend="auto", ollama=down).backend().name == "mlx"

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)  # the bundled model is not installed
    assert make_assistant(backend="auto", ollama=down).backend().name == "blt"


def test_a_missing_model_says_how_to_install_it(run_cli, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    code, out, err = run_cli("ask", "--backend", "mlx", "--no-memory", "Why is the sky blue?")
    assert code == 1 and INSTALL_HINT in err and "Traceback" not in err
    code, out, err = run_cli("status")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("backend mlx"))
    assert "not ready" in line and INSTALL_HINT in line


@pytest.mark.parametrize("split", ["heldout", "Heldout", "HELDOUT", " heldOut "])
def test_heldout_records_in_any_letter_case_never_reach_training(split):
    import numpy as np

    from training.data import CorpusRecord, build_samples

    recs = [CorpusRecord(f"id{i}", f"Question number {i}?", f"Answer number {i}.") for i in range(40)]
    recs[3] = CorpusRecord("held", "A held-out question?", "A held-out answer.", split=split)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(recs), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = build_samples(recs, doc_embeddings=vectors, k=2, embed_field="prompt")
    trained = [*data.train, *data.val]
    assert [s.id for s in data.heldout] == ["held"]
    assert all(s.id != "held" for s in trained)
    assert all("held-out" not in p for s in trained for p, _ in s.exemplars)  # nor as anyone's exemplar
