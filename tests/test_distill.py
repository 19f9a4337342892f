"""`shvayambhu distill` and `train --teacher`: the teacher answers every prompt but the held-out ones, each from a
store that does not hold its own record; its answers become the BLT's targets, the exemplars stay the corpus's;
interrupted runs resume."""

from __future__ import annotations

import json

import pytest

from blt.data import Sample
from rag.api import Shvayambhu
from rag.config import load_settings, on_fresh_store
from training.data import CorpusRecord, TrainingError, records_from_files
from training.distill import ask_all, fold_of, read_answers, sample, to_teach, with_teacher, write_answers, write_corpus


def _records() -> list[CorpusRecord]:
    rows = [
        ("Where is the Larnaca lighthouse?", "On the south cape, above the old harbour.", None),
        ("How tall is the Larnaca lighthouse?", "It stands 31 metres above the rocks.", None),
        ("When was the Larnaca lighthouse lit?", "Its lamp was first lit in 1864.", "HeldOut"),
        ("Who keeps the Larnaca lighthouse?", "A keeper from the harbour trust, Elena Varga.", None),
        ("Where is the Larnaca lighthouse?", "A duplicate prompt with another answer.", None),
    ]
    return [CorpusRecord(f"r{i}", p, r, "places", s) for i, (p, r, s) in enumerate(rows)]


def test_the_teacher_answers_every_prompt_but_the_held_out_ones():
    records = _records()
    prompts = to_teach(records)
    assert prompts == [records[0].prompt, records[1].prompt, records[3].prompt]  # held out: never; each prompt once
    asked: list[list[str]] = []

    def teacher(chunk: list[str]) -> list[str]:
        asked.append(chunk)
        return [f"  teacher says {p.split()[1]}  " for p in chunk]

    answers = ask_all(prompts, teacher, batch=2)
    assert [len(c) for c in asked] == [2, 1] and answers[records[1].prompt] == "teacher says tall"
    with pytest.raises(TrainingError, match="2 answers for 1"):
        ask_all(["q"], lambda chunk: ["a", "b"])


def test_the_teachers_answers_replace_the_targets_not_the_exemplars():
    exemplars = [("How tall is it?", "It stands 31 metres above the rocks.")]
    samples = [Sample("Where is it?", "On the south cape.", exemplars, id="a", truncated=True), Sample("Why?", "So.")]
    out, changed = with_teacher(samples, {"Where is it?": "South cape.", "Why?": ""})
    assert changed == 1 and out[0].response == "South cape." and out[0].exemplars == exemplars
    assert not out[0].truncated and out[0].id == "a" and out[1] == samples[1]  # an empty answer teaches nothing


def test_an_interrupted_run_asks_only_what_it_has_not_saved(tmp_path):
    saved = tmp_path / "answers.jsonl"
    saved.write_text(json.dumps({"prompt": "a?", "answer": "A."}) + "\n" + '{"prompt": "b?", "ans')  # torn last line
    done = read_answers(saved)
    assert done == {"a?": "A."}
    asked: list[str] = []
    got = ask_all(["a?", "b?", "c?"], lambda chunk: asked.extend(chunk) or [p.upper() for p in chunk], done=done)
    assert asked == ["b?", "c?"] and got == {"a?": "A.", "b?": "B?", "c?": "C?"}


def test_a_fold_store_keeps_the_held_out_mark_and_answers_read_back(tmp_path):
    records = _records()[:4]
    path = tmp_path / "c.jsonl"
    write_corpus(path, records)
    back = records_from_files([path])
    assert [r.split == "heldout" for r in back] == [False, False, True, False]
    assert [r.response for r in back] == [r.response for r in records]
    write_answers(tmp_path / "a.jsonl", {"Where?": "Here.", "Why?": "So."})
    assert read_answers(tmp_path / "a.jsonl") == {"Where?": "Here.", "Why?": "So."}
    assert not (tmp_path / "c.jsonl.tmp").exists()


def test_folds_are_stable_and_split_the_prompts():
    prompts = [f"question number {i}?" for i in range(200)]
    first = [fold_of(p, 2) for p in prompts]
    assert first == [fold_of(p, 2) for p in prompts] and 60 < sum(first) < 140
    some = sample(prompts, 50)
    assert len(some) == 50 and some == sample(prompts, 50) and some != prompts[:50]
    assert some == [p for p in prompts if p in set(some)]  # in corpus order


def test_distill_then_train_on_the_teacher(run_cli, tmp_path):
    """Through the real MLX model and a real store: the teacher never sees a record's own response, held-out
    records are never asked, a second run asks nothing again, and `train --teacher` learns its answers."""
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, _records()[:4])
    out = tmp_path / "t.jsonl"
    ask = ["distill", str(corpus), "--out", str(out), "--max-tokens", "8", "--batch", "2"]
    code, stdout, err = run_cli(*ask, "--limit", "1", "--json")  # the others stay in both stores
    assert code == 0 and json.loads(stdout)["asked"] == 1, err
    code, stdout, err = run_cli(*ask, "--json")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["asked"] == 3 and info["answers"] + info["refused_or_empty"] == 3 and info["resumed"] == 1
    work = tmp_path / "t.jsonl.work"
    settings = load_settings(environ={})
    for f in (0, 1):
        store = Shvayambhu(on_fresh_store(settings, work / f"store-{f}", "distill")).corpus()
        held = [m["prompt"] for m in store.get(include=["metadatas"])["metadatas"]] if store is not None else []
        assert all(fold_of(p, 2) != f for p in held)  # a fold's store holds none of its own records by now
        assert "When was the Larnaca lighthouse lit?" not in held  # nor the held-out one
    answers = read_answers(out)
    assert len(answers) == info["answers"] and "When was the Larnaca lighthouse lit?" not in answers
    assert len(read_answers(work / "answers.jsonl")) == 3
    code, stdout, err = run_cli(*ask, "--json")
    assert code == 0 and json.loads(stdout)["resumed"] == 3 and "answered" not in err  # nothing asked again

    write_answers(out, {r.prompt: f"Taught: {r.prompt}" for r in _records()})  # every prompt, the held-out one too
    run = tmp_path / "run"
    args = ["train", str(corpus), "--out", str(run), "--stages", "entropy", "--size", "tiny", "--max-steps", "1"]
    code, _, err = run_cli(*args, "--teacher", str(out), "--json")
    assert code == 0, err
    taught = json.loads((run / "data.json").read_text())["teacher"]
    assert taught["train"] + taught["val"] == 3  # the held-out record keeps its reference
    code, _, err = run_cli(*args, "--teacher", str(tmp_path / "none.jsonl"))
    assert code != 0 and "no teacher answers" in err
