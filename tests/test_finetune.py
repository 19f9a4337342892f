"""`shvayambhu finetune`: RAFT data through the layer, LoRA through mlx-lm (save, reload, resume), `[mlx] adapter`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import CorpusRecord, TrainingError
from training.raft_data import passage_questions, plan_items
from training.text import norm

PASSAGE = (
    "The Larnaca salt lake is a network of four lakes near the airport. To see the flamingos, visit between "
    "November and March. If the path is flooded, take the road along the western shore. The lake dries out "
    "in summer because the winter rain evaporates."
)


def _records(n: int) -> list[CorpusRecord]:
    out = []
    for i in range(n):
        split = ["HeldOut", " heldout ", "train", None][i % 4] if i < 8 else None
        text = f"Fact {i} is that item {i} weighs {i} kg."
        out.append(CorpusRecord(f"id{i}", f"What is fact number {i}?", text, "x", split))
    out.append(CorpusRecord("dup", "what is fact number 0", "A different answer to a held-out question.", "x", None))
    return out


def test_plan_never_holds_heldout_records_and_withholds_a_share():
    recs = _records(400)
    held = {"id0", "id1", "id4", "id5"}  # "HeldOut" and " heldout ": the held-out split in any letter case
    plan = plan_items(recs, abstain_share=0.25, generated=0, seed=0)
    assert plan.info["heldout"] == len(held)
    assert not held & {r.id for r in plan.store} and not held & {i.record for i in plan.items}
    assert "dup" not in {i.record for i in plan.items}  # its question repeats a held-out one
    withheld = {i.record for i in plan.items if i.role == "abstain"}
    assert withheld and not withheld & {r.id for r in plan.store}
    assert 0.18 < len(withheld) / (len(recs) - len(held) - 1) < 0.32
    assert {i.split for i in plan.items} == {"train", "val"}
    assert plan_items(recs, abstain_share=0.25, generated=0, seed=0).items == plan.items  # stable
    with pytest.raises(TrainingError, match="abstain_share"):
        plan_items(recs, abstain_share=1.0)


def test_passage_questions_answer_with_a_sentence_of_the_passage():
    qs = passage_questions(PASSAGE, limit=10)
    assert ("How do you see the flamingos?", "To see the flamingos, visit between November and March.") in qs
    assert any(q.startswith("What should you do if the path is flooded") for q, _ in qs)
    assert any(q.startswith("What is the Larnaca salt lake") for q, _ in qs)
    assert all(a in PASSAGE for _, a in qs) and len(qs) == 4


def test_examples_are_the_layers_own_prompts(make_assistant, tmp_path):
    """Each example's messages are exactly what the layer builds for its question against the fine-tuning store;
    withheld records are not in that store and their target is the layer's own "not found"; nothing held out."""
    from rag.api import Shvayambhu
    from rag.cli.finetune import prepare_data, store_settings
    from rag.consciousness.prompt import NOT_FOUND
    from tests.conftest import seed_paths
    from training.data import records_from_files

    recs = records_from_files(seed_paths())
    some = [r for r in recs if r.split == "heldout"][:3] + [r for r in recs if r.split != "heldout"][:45]
    settings = make_assistant(backend="mlx").settings
    options = {"abstain_share": 0.3, "val_fraction": 0.1, "generated": 2, "seed": 1}
    examples, info, backend = prepare_data(some, tmp_path, settings, plan_options=options, limit=40)
    assert info["examples"] == len(examples) > 5 and info["asked"] == 40
    held = {r.id for r in some if r.split == "heldout"}
    stored = {json.loads(line)["prompt"] for line in (tmp_path / "data" / "store.jsonl").read_text().splitlines()}
    assert not held & {e.record for e in examples}
    assert not {r.prompt for r in some if r.id in held} & stored
    a = Shvayambhu(store_settings(settings, tmp_path / "store"))
    by_id = {r.id: r for r in some}
    roles = set()
    for e in examples:
        assert e.messages == a.prepare(e.question, backend=backend, use_memory=False).messages
        withheld = by_id[e.record].prompt not in stored
        roles.add((e.role, withheld))
        if e.role == "abstain":
            assert e.target == NOT_FOUND and withheld
        else:
            assert norm(e.target)[:30] in norm(e.messages[-1]["content"])  # the answer is read from the reference
    # the seed corpus asks most questions twice in other words: a withheld record's twin answers it
    assert roles >= {("answer", False), ("twin", True)}, roles
    assert ("answer", True) not in roles and ("twin", False) not in roles
    again, _, _ = prepare_data(some, tmp_path, settings, plan_options=options, limit=40)  # a resumed run
    assert again == examples


def _tiny_model(seed: int = 0):
    import mlx.core as mx
    from mlx_lm.models.llama import Model, ModelArgs

    mx.random.seed(seed)
    args = ModelArgs("llama", 32, 2, 64, 2, 1e-5, 64, num_key_value_heads=2)
    model = Model(args)
    mx.eval(model.parameters())
    return model


def _tiny_data(n: int, seed: int) -> list[tuple[list[int], int]]:
    import random

    rng = random.Random(seed)
    return [([rng.randrange(1, 64) for _ in range(12)] + [7, 8, 9, 10, 2], 12) for _ in range(n)]


def test_lora_run_saves_reloads_resumes_and_writes_the_manifest(tmp_path):
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters

    from training.finetune import FinetuneConfig, run_finetune

    cfg = FinetuneConfig(
        tmp_path, rank=2, layers=1, max_seq=32, batch_size=2, steps=2, lr=3e-2, eval_every=1, report_every=1
    )
    train, val = _tiny_data(8, 0), _tiny_data(4, 1)
    r = run_finetune(_tiny_model(), train, val, cfg, data_hash="abc", manifest={"base_model": {"name": "tiny"}})
    assert r["steps"] == 2 and r["resumed_from"] == 0 and r["tokens"] > 0 and r["best_val_loss"] is not None
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["format"] == "shvayambhu-lora/1" and man["base_model"]["name"] == "tiny"
    assert man["data"]["sha256"] == "abc" and man["settings"]["rank"] == 2 and man["adapter"]["num_layers"] == 1
    assert any("val_loss" in row for row in man["log"])
    reports = [row for row in man["log"] if "train_loss" in row]  # each step timed, with the tokens read so far
    assert [row["step"] for row in reports] == [1, 2] and 0 < reports[0]["seconds"] <= reports[1]["seconds"]
    assert 0 < reports[0]["read"] < reports[1]["read"] == r["tokens"]
    x = mx.array([train[0][0]])
    base = _tiny_model()(x)
    last = load_adapters(_tiny_model(), str(tmp_path / "checkpoint"))(x)
    assert mx.abs(last - base).max().item() > 1e-4  # the saved adapter changes the logits
    best = load_adapters(_tiny_model(), str(tmp_path))(x)  # the best by validation loss (step 0: no change yet)
    assert (mx.abs(best - base).max().item() > 1e-4) == (r["best_step"] > 0)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    more = FinetuneConfig(tmp_path, rank=2, layers=1, max_seq=32, batch_size=2, steps=3, lr=3e-2, eval_every=1)
    r2 = run_finetune(_tiny_model(), train, val, more, data_hash="abc")
    assert r2["resumed_from"] == 2 and r2["steps"] == 3
    other = FinetuneConfig(tmp_path, rank=4, layers=1, max_seq=32, batch_size=2, steps=4)
    with pytest.raises(TrainingError, match="other settings"):
        run_finetune(_tiny_model(), train, val, other, data_hash="abc")


def test_early_stopping_ends_the_run(tmp_path):
    from training.finetune import FinetuneConfig, run_finetune

    cfg = FinetuneConfig(tmp_path, rank=2, layers=1, max_seq=32, batch_size=2, steps=50, lr=5.0, eval_every=1)
    cfg.patience = 1
    r = run_finetune(_tiny_model(), _tiny_data(8, 0), _tiny_data(4, 1), cfg, data_hash="x")
    assert r["stopped_early"] and r["steps"] < 50  # a learning rate this high makes validation worse at once


def _adapter_for_the_bundled_model(folder: Path, base: Path) -> None:
    """A 1-layer rank-2 adapter for SmolLM2 with random B (a trained one would take minutes), in the run layout."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    from rag.backends.mlx import _load
    from training.finetune import FinetuneConfig, _save_adapter, apply_lora

    model = _load.__wrapped__(str(base), "float32").model
    cfg = FinetuneConfig(folder, rank=2, layers=1)
    apply_lora(model, cfg)
    mx.random.seed(3)
    params = [(k, mx.random.normal(v.shape) * 0.05) for k, v in tree_flatten(model.trainable_parameters())]
    model.update(tree_unflatten(params))
    _save_adapter(model, folder, cfg)
    manifest = {"base_model": {"name": "SmolLM2-135M-Instruct", "bytes": base.stat().st_size}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_the_mlx_backend_loads_the_adapter_setting(tmp_path):
    import mlx.core as mx

    from rag.backends.base import BackendError
    from rag.backends.gguf import bundled_model_path
    from rag.backends.select import mlx_backend
    from rag.config import load_settings

    base_path = bundled_model_path()
    folder = tmp_path / "adapter"
    _adapter_for_the_bundled_model(folder, base_path)
    tuned = mlx_backend(load_settings(overrides={"mlx": {"adapter": str(folder)}}, environ={}))
    base = mlx_backend(load_settings(environ={}))
    assert tuned.adapter == folder.resolve() and base.adapter is None and tuned.loaded is not base.loaded
    ids = mx.array([tuned.tokenizer.chat_ids([{"role": "user", "content": "What is the capital of France?"}])])
    assert mx.abs(tuned.loaded.model(ids) - base.loaded.model(ids)).max().item() > 1e-3
    env = load_settings(environ={"SHVAYAMBHU_MLX_ADAPTER": str(folder)})
    assert env.mlx.adapter == str(folder)
    with pytest.raises(BackendError, match=r"\[mlx\] adapter .*no adapter_config.json"):
        mlx_backend(load_settings(overrides={"mlx": {"adapter": str(tmp_path)}}, environ={}))
    (folder / "manifest.json").write_text(json.dumps({"base_model": {"name": "other", "bytes": 5}}))
    with pytest.raises(BackendError, match="trained on other"):
        mlx_backend(load_settings(overrides={"mlx": {"adapter": str(folder)}}, environ={}))


def test_finetune_command_is_wired(run_cli):
    code, out, _ = run_cli("finetune", "--help")
    assert code == 0 and "--abstain-share" in out and "--resume" in out


def test_paraphrases_are_held_out_and_validated_together_but_withheld_alone():
    """A record whose question is near a held-out one is dropped with it; near-duplicates share their split (no
    validation question has a twin in training), but each is withheld alone, so its twin can answer it."""
    import numpy as np

    recs = _records(40)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(recs), 64))
    vectors[10] = vectors[0] + 0.01  # id10 paraphrases the held-out id0
    for i in range(12, 40, 2):
        vectors[i + 1] = vectors[i] + 0.01  # twins
    plan = plan_items(recs, embeddings=vectors, abstain_share=0.5, generated=0)
    assert plan.info["near_heldout_dropped"] >= 1 and "id10" not in {i.record for i in plan.items}
    role = {i.record: (i.role, i.split) for i in plan.items if i.kind == "pair"}
    assert all(role[f"id{i}"][1] == role[f"id{i + 1}"][1] for i in range(12, 40, 2))
    assert any(role[f"id{i}"][0] != role[f"id{i + 1}"][0] for i in range(12, 40, 2))
    assert {r for r, _ in role.values()} == {"answer", "abstain"}
