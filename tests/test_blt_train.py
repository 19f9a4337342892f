"""Training and evaluation of the BLT: data layout, retrieval split, training, resume, early stopping, BPB.

Tiny models and short runs; the whole file takes well under a minute on two CPU cores.
"""

from __future__ import annotations

from blt import blas

blas.enable_openblas(verbose=False)  # before mlx is imported, when this file is the first to import it

import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from blt import loop  # noqa: E402
from blt import train as T  # noqa: E402
from blt.bpb import bits_per_byte, bpb_report, compressor_bpb, compressor_table, score  # noqa: E402
from blt.checkpoint import load_checkpoint  # noqa: E402
from blt.config import BaselineConfig, BLTConfig, EntropyConfig, PatcherConfig  # noqa: E402
from blt.data import (  # noqa: E402
    DataConfig,
    Sample,
    augment,
    build_example,
    clip_response,
    collate,
    context_tokens,
    drop_words,
    eval_examples,
    self_copy_rate,
    split_validation,
    train_batches,
)
from blt.tokens import BOS, EOS, PAD, SEP, decode, encode  # noqa: E402
from blt.train_config import TrainConfig  # noqa: E402
from training.data import build_samples, nearest_neighbours, records_from_files  # noqa: E402

LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
MAX_LEN = 97  # 96 input bytes


def code_task(n: int, start: int, seed: int) -> list[Sample]:
    """Each prompt asks for a random code word that appears only in the record's one exemplar."""
    rng = random.Random(seed)
    out = []
    for t in range(start, start + n):
        code = "".join(rng.choice(LETTERS) for _ in range(6))
        out.append(Sample(f"code {t:04d}?", code, [(f"code of {t:04d}", code)], id=f"r{t}"))
    return out


ENTROPY = EntropyConfig(dim=32, n_layers=1, n_heads=2, window=64)
TINY_BLT = BLTConfig(
    max_bytes=MAX_LEN - 1,
    ngram_min=3,
    ngram_max=4,
    hash_rows=512,
    enc_dim=64,
    enc_layers=1,
    enc_heads=2,
    local_window=32,
    global_dim=96,
    global_layers=1,
    global_heads=2,
    dec_dim=64,
    dec_layers=1,
    dec_heads=2,
    cross_k=2,
    dropout=0.0,
    patcher=PatcherConfig(max_patch_len=6),
    entropy=ENTROPY,
)


def tcfg(out: Path, kind: str, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(out),
        kind=kind,
        batch_size=16,
        lr=3e-3,
        warmup_steps=10,
        eval_every=1000,
        log_every=5,
        pad_multiple=32,
        eval_examples=16,
        progress=False,
        data=DataConfig(max_len=MAX_LEN, drop_exemplars=0.1),
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def task() -> dict[str, list[Sample]]:
    return {"train": code_task(3000, 0, 1), "val": code_task(16, 5000, 2), "heldout": code_task(32, 6000, 3)}


@pytest.fixture(scope="module")
def entropy_dir(tmp_path_factory: pytest.TempPathFactory, task) -> Path:
    out = tmp_path_factory.mktemp("runs") / "entropy"
    T.train_entropy(task["train"], task["val"], tcfg(out, "entropy", max_steps=20), entropy_config=ENTROPY)
    return out


# ---- data layout ----


def test_example_layout_and_loss_mask():
    s = Sample("What is 2+2?", "Four.", [("What is 1+1?", "Two."), ("What is 3+3?", "Six.")])
    ex = build_example(s, fmt="qa", max_len=200)
    assert ex.tokens[0] == BOS and ex.tokens[-1] == EOS and len(ex.tokens) == len(ex.mask)
    masked = [t for t, m in zip(ex.tokens, ex.mask, strict=True) if m]
    assert masked == encode("Four.") + [EOS]  # exactly the response bytes and EOS
    first = ex.mask.index(1)
    assert ex.tokens[first - 1] == SEP and sum(ex.mask[first:]) == len(ex.mask) - first
    # most relevant exemplar last, next to the prompt; SEP prompt SEP before the response
    assert decode(ex.tokens).startswith(b"Q: What is 3+3?\nA: Six.\n\nQ: What is 1+1?\nA: Two.\n\n")
    assert ex.tokens[:first].count(SEP) == 2
    assert context_tokens("What is 2+2?", s.exemplars) == ex.tokens[:first]


def test_truncation_drops_exemplars_first_and_keeps_response_start():
    s = Sample("prompt " * 3, "response that is long " * 4, [("ex p " * 5, "ex r " * 40)])
    full = build_example(s, max_len=None)
    for max_len in (len(full.tokens) - 10, 120, 60, 20):
        ex = build_example(s, max_len=max_len)
        assert len(ex.tokens) <= max_len
        resp = decode([t for t, m in zip(ex.tokens, ex.mask, strict=True) if m])
        assert s.response.encode().startswith(resp.rstrip(b"")) and resp[:8] == b"response"
        if max_len >= 3 + len(s.prompt) + len(s.response) + 1:  # room for all of it: only exemplars were cut
            assert ex.tokens[-1] == EOS and encode(s.prompt) == ex.tokens[ex.tokens.index(SEP) + 1 :][: len(s.prompt)]


def test_augmentation_is_deterministic_and_varies_formats():
    s = Sample("p?", "r.", [("a", "b"), ("c", "d"), ("e", "f")])
    cfg = DataConfig(max_len=200)
    assert augment(s, 7, cfg) == augment(s, 7, cfg)
    layouts = {bytes(decode(augment(s, seed, cfg).tokens)) for seed in range(60)}
    assert len(layouts) >= 6  # formats x exemplar counts x retrieval drop-out
    assert any(b"### Prompt" in x for x in layouts) and any(b"Q: " in x for x in layouts)
    assert any(b"User: " in x for x in layouts)


def test_copy_warmup_shows_a_noisy_own_response_early_then_fades():
    resp = "the quick brown fox jumps over the lazy dog near the old mill by the river"
    s = Sample("where did the fox go?", resp, [("unrelated question", "an unrelated answer about tea")])
    cfg = DataConfig(max_len=400, self_copy=1.0, self_copy_epochs=2, drop_exemplars=0.0, formats=("qa",))

    def own_shown(epoch: int) -> int:
        texts = [bytes(decode(augment(s, seed, cfg, epoch).tokens)) for seed in range(40)]
        head = [t[: t.rindex(b"where did the fox go?")] for t in texts]  # what precedes the real prompt
        return sum(b"fox jumps" in h or b"lazy dog" in h or b"old mill" in h for h in head)

    assert own_shown(0) == 40  # rate 1.0 in the first epoch
    assert 5 <= own_shown(1) <= 35  # half of that in the second
    assert own_shown(2) == 0 and own_shown(5) == 0  # gone afterwards: true neighbours only
    assert self_copy_rate(cfg, 1) == 0.5 and self_copy_rate(DataConfig(), 0) == 0.0
    rng = random.Random(0)
    dropped = drop_words(resp, 0.3, rng)
    assert len(dropped) < len(resp) and set(dropped.split()) <= set(resp.split())


def test_batches_right_padded_and_resumable():
    samples = [Sample(f"p{i}", "r" * (i % 7 + 1), [("x", "y")]) for i in range(40)]
    cfg = DataConfig(max_len=64)
    it = train_batches(samples, 8, cfg, seed=3, pad_multiple=16)
    got = [next(it) for _ in range(7)]
    for _, _, b in got:
        assert b.tokens.shape[0] == 8 and (b.tokens.shape[1] - 1) % 16 == 0
        for row, m in zip(b.tokens, b.mask, strict=True):
            n = int((row != PAD).sum())
            assert (row[:n] != PAD).all() and (row[n:] == PAD).all() and m[n:].sum() == 0
    epoch, j, _ = got[4]
    again = next(train_batches(samples, 8, cfg, seed=3, pad_multiple=16, start=(epoch, j)))
    assert np.array_equal(again[2].tokens, got[4][2].tokens)
    b = collate([build_example(samples[0], max_len=64)], pad_multiple=16)
    assert b.inputs.shape == b.targets.shape == b.target_mask.shape


def test_validation_split_is_stable():
    samples = [Sample(f"p{i}", f"r{i}", id=f"id{i}") for i in range(100)]
    tr, va = split_validation(samples, 0.1, seed=0)
    tr2, va2 = split_validation(list(reversed(samples)), 0.1, seed=0)
    assert len(va) == 10 and {s.id for s in va} == {s.id for s in va2}
    assert not {s.id for s in tr} & {s.id for s in va}


# ---- retrieval split ----


def test_neighbours_leave_out_self_near_duplicates_and_pool():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(6, 16)).astype(np.float32)
    e[1] = e[0] + 0.01 * rng.normal(size=16)  # a near-duplicate of record 0
    e[2] = e[0] + 0.6 * rng.normal(size=16)  # similar, not a duplicate
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    pool = np.array([True, True, True, True, True, False])
    nb = nearest_neighbours(e, e, pool, k=3)
    assert 0 not in nb[0] and 1 not in nb[0] and nb[0][0] == 2
    assert all(5 not in row for row in nb)
    assert all(i not in row for i, row in enumerate(nb))


class HashEmbedder:
    """A deterministic stand-in embedder: bag of character trigrams, hashed."""

    name, dim = "hash-trigrams", 64

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for j in range(len(t) - 2):
                out[i, sum(map(ord, t[j : j + 3])) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_heldout_records_never_reach_training(tmp_path: Path):
    lines = []
    for i in range(60):
        rec = {
            "prompt": f"How do I care for plant number {i}?",
            "response": f"Water plant {i} weekly, rotate it.",
        }
        if i % 6 == 0:
            rec["split"] = "heldout"
        lines.append(json.dumps(rec))
    # a near-duplicate of a heldout record (one more space) must not leak either
    lines.append(
        json.dumps({"prompt": "How do I care for plant  number 6?", "response": "Water plant 6 weekly, rotate it."})
    )
    f = tmp_path / "corpus.jsonl"
    f.write_text("\n".join(lines) + "\n")
    recs = records_from_files([f])
    data = build_samples(recs, embedder=HashEmbedder(), k=3, val_fraction=0.1, seed=0)
    held = {(s.prompt, s.response) for s in data.heldout}
    assert len(held) == 10 and data.info["heldout_carved_by_hash"] is False
    for s in data.train + data.val:
        assert (s.prompt, s.response) not in held
        assert not held & set(s.exemplars)
    for s in data.heldout:
        assert (s.prompt, s.response) not in set(s.exemplars) and s.exemplars
    train_ids = {s.id for s in data.train}
    for s in data.train:  # training exemplars come from training records only
        assert all(any(t.prompt == p for t in data.train) for p, _ in s.exemplars) and s.id in train_ids
    # and no heldout byte string shows up in any training batch
    cfg = DataConfig(max_len=400)
    it = train_batches(data.train, 8, cfg, seed=0)
    seen = b"".join(decode(row) + b"\x00" for _ in range(12) for row in next(it)[2].tokens)
    for _, r in held:
        assert r.encode() not in seen


# ---- BPB ----


def test_compressor_bpb_known_cases():
    ident = lambda b: b  # noqa: E731 - a "compressor" that stores bytes as they are: exactly 8 bits a byte
    assert compressor_bpb(b"context", b"target!", ident) == 8.0
    rnd = random.Random(0).randbytes(20_000)
    assert compressor_bpb(rnd, rnd, "xz -9") < 0.2  # seen before: nearly free
    assert compressor_bpb(rnd, random.Random(1).randbytes(20_000), "xz -9") > 7.9  # random: incompressible
    assert math.isclose(bits_per_byte(math.log(2) * 10, 10), 1.0)
    rows = compressor_table([("a", "b" * 50)] * 20, [("a", "b" * 50)])
    assert {r["name"] for r in rows} == {"gzip -9", "bzip2 -9", "xz -9"} and all(r["bpb"] < 2 for r in rows)


# ---- training ----


def _losses(log: Path) -> list[tuple[int, float]]:
    return [(d["step"], d["loss"]) for d in map(json.loads, log.read_text().splitlines()) if "loss" in d]


def test_blt_loss_falls_and_resume_continues(tmp_path: Path, task, entropy_dir: Path):
    out = tmp_path / "blt"
    r1 = T.train_blt(
        task["train"],
        task["val"],
        tcfg(out, "blt", max_steps=40, eval_every=20),
        entropy_dir=entropy_dir,
        blt_config=TINY_BLT,
        command="pytest run 1",
    )
    assert r1["step"] == 40 and r1["stopped"] == "max steps"
    losses = _losses(out / "log.jsonl")
    assert losses[0][0] == 1 and losses[-1][1] < 0.6 * losses[0][1]  # from ~ln(260) to well below
    assert json.loads((out / "last" / "trainer.json").read_text())["step"] == 40
    r2 = T.train_blt(
        task["train"],
        task["val"],
        tcfg(out, "blt", max_steps=55, eval_every=20),
        entropy_dir=entropy_dir,
        blt_config=TINY_BLT,
        command="pytest run 2",
    )
    assert r2["step"] == 55
    steps = [s for s, _ in _losses(out / "log.jsonl")]
    assert steps == sorted(steps) and steps[-1] == 55 and min(s for s in steps if s > 40) == 45
    ck = load_checkpoint(out / "last")
    assert ck.kind == "blt" and ck.metrics["step"] == 55 and ck.metrics["command"] == "pytest run 2"
    assert ck.entropy_model is not None and ck.config.patcher.threshold == r1["patch_threshold"]
    best = load_checkpoint(out / "best")
    assert best.metrics["val_bpb"] == min(
        d["val_bpb"]
        for d in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if "val_bpb" in d and d["val_bpb"] is not None
    )


def test_early_stopping_keeps_best(tmp_path: Path, task, monkeypatch: pytest.MonkeyPatch):
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])

    class FakeScore:
        def __init__(self):
            self.bpb = next(scripted)

    monkeypatch.setattr(loop, "score", lambda *a, **k: FakeScore())
    out = tmp_path / "base"
    cfg = tcfg(out, "baseline", max_steps=100, eval_every=5, patience=2)
    r = T.train_baseline(
        task["train"],
        task["val"],
        cfg,
        command="pytest",
        baseline_config=BaselineConfig(dim=32, n_layers=1, n_heads=2, max_bytes=MAX_LEN - 1),
    )
    assert r["stopped"] == "early stopping" and r["step"] == 20 and r["best_step"] == 10
    best = load_checkpoint(out / "best")
    assert best.metrics["val_bpb"] == 2.0 and best.metrics["step"] == 10
    # resuming an early-stopped run trains no further
    r2 = T.train_baseline(task["train"], task["val"], cfg, command="pytest")
    assert r2["step"] == 20


def test_retrieval_conditioning_lowers_bpb(tmp_path: Path, task):
    out = tmp_path / "copy"
    T.train_baseline(
        task["train"],
        task["val"],
        tcfg(out, "baseline", max_steps=300),
        baseline_config=BaselineConfig(dim=64, n_layers=2, n_heads=2, max_bytes=MAX_LEN - 1),
    )
    ck = load_checkpoint(out / "best")
    held = task["heldout"]
    with_ex = score(ck.model, eval_examples(held, MAX_LEN, True)).bpb
    without = score(ck.model, eval_examples(held, MAX_LEN, False)).bpb
    assert without > 3.0  # a random code word costs log2(24) = 4.6 bits a letter without its exemplar
    assert with_ex < 0.8 * without
    report = bpb_report(heldout=held, train=task["train"][:200], max_len=MAX_LEN, baseline=ck)
    names = [r["name"] for r in report["rows"]]
    assert names[:2] == ["byte transformer + retrieval", "byte transformer, no retrieval"]
    assert "xz -9" in names and "| model |" in report["markdown"]
    assert math.isclose(report["rows"][0]["bpb"], with_ex, rel_tol=1e-5)


@pytest.mark.slow
def test_blt_learns_to_copy_from_exemplars(tmp_path: Path, task, entropy_dir: Path):
    """The same task with the BLT itself: it needs a few hundred more steps than the baseline to copy."""
    out = tmp_path / "blt-copy"
    T.train_blt(
        task["train"],
        task["val"],
        tcfg(out, "blt", max_steps=500),
        entropy_dir=entropy_dir,
        blt_config=TINY_BLT,
    )
    ck = load_checkpoint(out / "best")
    report = bpb_report(heldout=task["heldout"], train=task["train"][:200], max_len=MAX_LEN, blt=ck, compressors=False)
    by = {r["name"]: r for r in report["rows"]}
    assert by["BLT + retrieval"]["bpb"] < 0.5 * by["BLT, no retrieval"]["bpb"]
    assert report["summary"]["retrieval_ratio"] < 0.5 and by["BLT + retrieval"]["avg_patch_bytes"] > 1


def test_samples_from_the_ingested_collection(seed_store):
    """Records read back from Chroma (stored embeddings); records marked heldout stay out of training."""
    from training.data import load_data, records_from_chroma

    _, col = seed_store
    recs, embs = records_from_chroma(col)
    assert embs is not None and embs.shape[0] == len(recs) == col.count()
    marked = {(r.prompt, r.response) for r in recs if r.split == "heldout"}
    data = load_data(collection=col, k=3)
    assert {(s.prompt, s.response) for s in data.heldout} == marked
    if marked:
        assert data.info["heldout_carved_by_hash"] is False
    for s in data.train + data.val:
        assert (s.prompt, s.response) not in marked and not marked & set(s.exemplars)
        assert len(s.exemplars) == 3 and (s.prompt, s.response) not in s.exemplars


def test_a_clipped_response_teaches_no_eos():
    """A response cut to make room for exemplars has not ended: EOS must not be learned (or scored) there."""
    s = Sample("q?", "a long answer that goes on", [("p", "r")])
    whole, cut = build_example(s, max_len=200), build_example(clip_response(s, 6), max_len=200)
    assert whole.tokens[-1] == EOS and whole.mask[-1] == 1
    assert cut.tokens[-1] != EOS and EOS not in cut.tokens and cut.n_target == 6
    assert clip_response(s, 100).truncated is False and clip_response(s, 6).truncated is True
