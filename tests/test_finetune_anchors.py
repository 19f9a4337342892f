"""Anchoring examples (the base model's own answers to prompts with no reference), validation loss by kind of
example, and the tuned side's own copy weight in the fine-tuning bench."""

from __future__ import annotations

import json

import pytest

from training.anchors import AnchorPrompt, anchor_count, anchor_examples, pick_anchors, whole_sentences
from training.data import TrainingError
from training.raft_data import Example, Item, build_examples


def _prompt(kind: str, i: int) -> AnchorPrompt:
    return AnchorPrompt(f"question {i}?", [{"role": "user", "content": f"question {i}?"}], kind)


def test_anchor_share_and_picking_take_both_kinds_in_turn():
    assert anchor_count(700, 0.3) == 300 and anchor_count(10, 0.0) == 0
    with pytest.raises(TrainingError, match="anchor share"):
        anchor_count(10, 1.0)
    pool = [_prompt("unreferenced", i) for i in range(10)] + [_prompt("general", i) for i in range(3)]
    pool.append(_prompt("general", 0))  # the same question twice is anchored once
    chosen = pick_anchors(pool, 8, seed=1)
    kinds = [p.kind for p in chosen]
    assert len(chosen) == 8 and kinds.count("general") == 3 and kinds.count("unreferenced") == 5
    assert kinds[:6] == ["general", "unreferenced"] * 3  # in turn while both last
    assert pick_anchors(list(reversed(pool)), 8, seed=1) == chosen  # stable, whatever the input order
    assert pick_anchors(pool, 8, seed=2) != chosen


def test_anchor_targets_are_what_the_model_says_in_batches():
    calls = []

    def generate(batch):
        calls.append(len(batch))
        return ["" if "3" in m[0]["content"] else f" said to {m[0]['content']} " for m in batch]

    prompts = [_prompt("unreferenced", i) for i in range(5)]
    made, empty = anchor_examples(prompts, generate, batch=2)
    assert calls == [2, 2, 1] and empty == 1 and len(made) == 4
    first = Example("question 0?", prompts[0].messages, "said to question 0?", "anchor", "unreferenced", "", "train")
    assert made[0] == first


def test_an_answer_cut_by_the_token_limit_keeps_its_whole_sentences():
    assert whole_sentences("Canberra is the capital. It was chosen in") == "Canberra is the capital."
    assert whole_sentences('He said "Hi." Then') == 'He said "Hi."'
    assert whole_sentences("Pi is 3.14 and e is") == "Pi is 3.14 and e is"  # no sentence end: as it is


def test_prompts_without_a_reference_are_kept_for_anchoring():
    items = [Item("Where is it?", None, "r1", "pair", "answer", "val")]
    items.append(Item("And this?", None, "r2", "pair", "answer", "train"))
    messages = [{"role": "user", "content": "Where is it?"}]

    def layer(q):
        return (messages, {}) if q == "Where is it?" else ([{"role": "user", "content": q}], {"r2": "This is it."})

    kept: list = []
    made, skipped = build_examples(items, layer, "no", unreferenced=kept)
    assert skipped["no_reference"] == 1 and kept == [("Where is it?", messages, "val")]
    assert [e.record for e in made] == ["r2"]


def test_anchors_come_from_the_base_model_through_the_layer(make_assistant):
    """Both kinds of anchor prompt are the layer's own (no reference; no retrieval) and their targets the MLX
    model's greedy answers, the same when asked again."""
    from rag.cli.finetune_anchors import add_anchors, base_generate

    a = make_assistant(backend="mlx")
    backend = a.backend("mlx")
    nothing = a.prepare("Zorblax quantum tea?", backend=backend, use_memory=False)
    unref = [("Zorblax quantum tea?", nothing.messages, "train")]
    items = [Item("What is the capital of France?", None, "r", "pair", "answer", "val")]
    kept = [Example("q", [], "t", "answer", "pair", "r", "train")] * 5
    out, info = add_anchors(a, backend, kept, items, unref, share=0.3, tokens=8, seed=0)
    anchors = out[5:]
    assert out[:5] == kept and info["asked"] == 2 and {e.kind for e in anchors} == {"unreferenced", "general"}
    general = next(e for e in anchors if e.kind == "general")
    plain = a.prepare(general.question, backend=backend, use_memory=False, use_retrieval=False)
    assert general.messages == plain.messages
    assert general.split == "val" and all(e.role == "anchor" and e.target for e in anchors)
    again = base_generate(backend, 8)([e.messages for e in anchors])
    assert [s.strip() for s in again] == [e.target for e in anchors]
    assert all(len(backend.tokenizer.encode(e.target)) <= 9 for e in anchors)


def test_validation_loss_is_reported_by_kind(tmp_path):
    from rag.cli.finetune import val_groups
    from tests.test_finetune import _tiny_data, _tiny_model
    from training.finetune import FinetuneConfig, run_finetune

    cfg = FinetuneConfig(tmp_path, rank=2, layers=1, max_seq=32, batch_size=2, steps=2, lr=3e-2, eval_every=2)
    val = {"answer": _tiny_data(3, 1), "abstain": _tiny_data(2, 2)}  # 3: a short last batch still counts
    r = run_finetune(_tiny_model(), _tiny_data(8, 0), val, cfg, data_hash="k")
    assert r["val_examples"] == 5 and r["val_by_kind"] == {"answer": 3, "abstain": 2}
    log = [row for row in json.loads((tmp_path / "manifest.json").read_text())["log"] if "val_loss" in row]
    assert [row["step"] for row in log] == [0, 2]
    for row in log:
        kinds = row["val_by_kind"]
        assert set(kinds) == {"answer", "abstain"} and min(kinds.values()) <= row["val_loss"] <= max(kinds.values())
    assert r["best_val_by_kind"] == min(log, key=lambda row: row["val_loss"])["val_by_kind"]

    def ex(role, kind, i):
        return Example(f"q{role}{kind}{i}", [], "t", role, kind, "r", "val")

    examples = [ex("answer", "pair", i) for i in range(9)] + [ex("abstain", "pair", 0)]
    examples += [ex("answer", "span", i) for i in range(3)]
    examples += [ex("anchor", "general", i) for i in range(4)] + [Example("x", [], "t", "answer", "pair", "r", "train")]
    examples += [ex("twin", "pair", 0)]  # answered from another record: validated apart (the held-out case)
    groups = val_groups(examples, 8)
    assert {k: len(v) for k, v in groups.items()} == {"abstain": 1, "anchor": 2, "answer": 2, "span": 2, "twin": 1}
    assert val_groups(examples, 8) == groups


def test_the_bench_gives_the_tuned_side_its_own_copy_weight():
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_finetune.py"
    spec = importlib.util.spec_from_file_location("bench_finetune", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(
        adapter="/x", which="base,tuned", copy_weight=None, tuned_copy_weight=0.0, max_tokens=64, extractive=False
    )
    from rag.config import load_settings

    (_, base), (_, tuned) = bench.configs(args)
    assert base.mlx.copy_weight == load_settings().mlx.copy_weight > 0
    assert tuned.mlx.copy_weight == 0.0 and tuned.mlx.adapter == "/x"
    args.copy_weight, args.tuned_copy_weight = 0.2, None
    assert [s.mlx.copy_weight for _, s in bench.configs(args)] == [0.2, 0.2]
