"""The BLT model, its parts and checkpoints, on tiny models (CPU, a few seconds in all)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

from blt import tokens
from blt.baseline import ByteTransformer
from blt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from blt.config import BaselineConfig, BLTConfig, EntropyConfig, PatcherConfig
from blt.copying import NO_MATCH, CopyEmbedding, CopyIndex, match_next
from blt.entropy import EntropyModel, entropies
from blt.hashing import BASE, MODULUS, hash_ids, ngram_hashes
from blt.layers import _chunked_local_attention, window_mask
from blt.model import BLT, num_params
from blt.patching import OnlinePatcher, patch_ids, patch_starts

REPO = Path(__file__).resolve().parent.parent
KINDS = ["entropy", "monotonic", "space", "static"]
TEXT = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs! 123 "


def tiny_config(kind: str = "entropy", threshold: float = 5.4) -> BLTConfig:
    return BLTConfig(
        max_bytes=128, ngram_min=2, ngram_max=4, hash_rows=97,
        enc_dim=32, enc_layers=1, enc_heads=2, local_window=8,
        global_dim=48, global_layers=2, global_heads=2,
        dec_dim=32, dec_layers=1, dec_heads=2, cross_k=2,
        patcher=PatcherConfig(kind=kind, threshold=threshold, max_patch_len=6, static_size=3),
        entropy=EntropyConfig(dim=32, n_layers=1, n_heads=2, window=8),
    )  # fmt: skip


def tiny_models(kind: str = "entropy", seed: int = 0) -> tuple[BLT, EntropyModel]:
    """A random tiny BLT + entropy model with the threshold set so that patches have varied lengths."""
    mx.random.seed(seed)
    cfg = tiny_config(kind)
    em = EntropyModel(cfg.entropy)
    if cfg.patcher.needs_entropy:
        H = np.array(entropies(em, mx.array([[tokens.BOS] + tokens.encode(TEXT)])))[0]
        cfg.patcher.threshold = float(np.median(H) if kind == "entropy" else np.median(np.diff(H)))
    return BLT(cfg), em


def starts_for(model: BLT, em: EntropyModel, toks: mx.array) -> mx.array:
    H = entropies(em, toks) if model.cfg.patcher.needs_entropy else None
    return patch_starts(toks, model.cfg.patcher, H)


def random_tokens(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Mostly text-like bytes with some spaces, so that every patcher makes patches of several sizes."""
    alphabet = np.array(tokens.encode(b"abcdefgh    ,.xyz"))
    toks = alphabet[rng.integers(0, len(alphabet), shape)]
    toks[:, 0] = tokens.BOS
    return toks.astype(np.int32)


# ---- tokens and configs ----


def test_tokens_roundtrip_and_specials():
    s = "héllo 👋 नमस्ते"
    ids = tokens.encode(s)
    assert len(ids) == len(s.encode("utf-8")) and min(ids) >= tokens.OFFSET and max(ids) < tokens.VOCAB_SIZE
    assert tokens.decode([tokens.BOS, *ids, tokens.SEP, tokens.EOS, tokens.PAD]) == s.encode("utf-8")
    assert (tokens.PAD, tokens.BOS, tokens.EOS, tokens.SEP) == (0, 1, 2, 3)
    assert (tokens.OFFSET, tokens.VOCAB_SIZE) == (4, 260)


def test_config_roundtrip_and_rejects_unknown_or_bad_keys():
    cfg = tiny_config("space")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert BLTConfig.from_dict(d) == cfg
    b = BaselineConfig(dim=64, n_layers=2, n_heads=2, window=16)
    assert BaselineConfig.from_dict(b.to_dict()) == b
    with pytest.raises(ValueError, match="unknown key.*'globl_dim'"):
        BLTConfig.from_dict({**d, "globl_dim": 64})
    with pytest.raises(ValueError, match="PatcherConfig: unknown key.*'theta'"):
        BLTConfig.from_dict({**d, "patcher": {**d["patcher"], "theta": 1.0}})
    with pytest.raises(ValueError, match="enc_dim"):
        BLTConfig.from_dict({**d, "enc_dim": "32"})
    with pytest.raises(ValueError, match="kind"):
        PatcherConfig(kind="bpe")
    with pytest.raises(ValueError, match="divisible"):
        BLTConfig(global_dim=100, global_heads=3)


# ---- shapes ----


def test_shapes_and_dtypes():
    model, em = tiny_models()
    rng = np.random.default_rng(0)
    toks = mx.array(random_tokens(rng, (3, 40)))
    H = entropies(em, toks)
    assert H.shape == (3, 40) and H.dtype == mx.float32
    Hn = np.array(H)
    assert (Hn >= 0).all() and (Hn <= math.log(tokens.VOCAB_SIZE) + 1e-4).all()
    st = starts_for(model, em, toks)
    assert st.shape == (3, 40) and st.dtype == mx.bool_ and np.array(st)[:, 0].all()
    pid = patch_ids(st)
    assert pid.dtype == mx.int32 and np.array(pid)[:, 0].tolist() == [0, 0, 0]
    logits = model(toks, st)
    assert logits.shape == (3, 40, tokens.VOCAB_SIZE) and logits.dtype == mx.float32
    assert em(toks).shape == (3, 40, tokens.VOCAB_SIZE)
    base = ByteTransformer(BaselineConfig(dim=32, n_layers=2, n_heads=2))
    out = base(toks)
    assert out.shape == (3, 40, tokens.VOCAB_SIZE) and out.dtype == mx.float32
    assert num_params(model) > num_params(base) > 0
    assert np.isfinite(np.array(logits)).all()


def test_chunked_window_attention_matches_masked():
    mx.random.seed(1)
    for T, W, splits in [(37, 5, 2), (64, 16, 1), (100, 8, 4)]:
        q, k, v = (mx.random.normal((2, 3, T, 8)) for _ in range(3))
        ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=window_mask(T, T, W))
        out = _chunked_local_attention(q, k, v, 0.3, W, splits)
        assert mx.allclose(out, ref, atol=1e-5).item(), (T, W, splits)


# ---- patching ----


def segments(toks: np.ndarray, starts: np.ndarray) -> list[list[int]]:
    out: list[list[int]] = []
    for t, s in zip(toks.tolist(), starts.tolist(), strict=True):
        if s or not out:
            out.append([])
        out[-1].append(t)
    return out


def test_patch_rules_by_hand():
    toks = np.array([[tokens.BOS, *tokens.encode(b"ab  cd,e"), tokens.SEP, *tokens.encode(b"fghijklmn")]])
    T = toks.shape[1]
    space = np.array(patch_starts(toks, PatcherConfig(kind="space", max_patch_len=6)))[0]
    assert [tokens.decode(s) for s in segments(toks[0], space)] == [
        b"",
        b"ab  ",
        b"cd,",
        b"e",
        b"",
        b"fghijk",
        b"lmn",
    ]  # BOS alone, spaces stay with their word, SEP alone, max_patch_len caps the long word
    static = np.array(patch_starts(toks, PatcherConfig(kind="static", static_size=3, max_patch_len=6)))[0]
    assert [len(s) for s in segments(toks[0], static)] == [1, 3, 3, 2, 1, 3, 3, 3]
    H = np.zeros((1, T), np.float32)
    H[0, 3] = 2.0  # uncertain after position 3 -> position 4 opens a patch
    H[0, 6] = 0.9  # below the threshold: nothing
    ent_cfg = PatcherConfig(kind="entropy", threshold=1.0, max_patch_len=6)
    ent = np.array(patch_starts(toks, ent_cfg, H))[0]
    assert np.flatnonzero(ent).tolist() == [0, 1, 4, 9, 10, 16]
    mono_cfg = PatcherConfig(kind="monotonic", threshold=0.5, max_patch_len=16)
    mono = np.array(patch_starts(toks, mono_cfg, H))[0]
    assert np.flatnonzero(mono).tolist() == [0, 1, 4, 7, 9, 10]  # rises at 3 (+2.0) and 6 (+0.9) only


@pytest.mark.parametrize("kind", KINDS)
def test_patching_prefix_property_and_online_agree(kind):
    rng = np.random.default_rng(1)
    toks = random_tokens(rng, (3, 70))
    toks[1, 30] = tokens.SEP
    H = rng.gamma(2.0, 1.0, toks.shape).astype(np.float32)
    theta = 2.0 if kind == "entropy" else 0.5
    cfg = PatcherConfig(kind=kind, threshold=theta, max_patch_len=5, static_size=4)
    full = np.array(patch_starts(toks, cfg, H))
    assert 0.1 < full.mean() < 0.9  # the rule does something
    lengths = [len(s) for row in range(3) for s in segments(toks[row], full[row])]
    assert max(lengths) <= cfg.max_patch_len
    for t in (1, 2, 17, 31, 69):
        assert (np.array(patch_starts(toks[:, :t], cfg, H[:, :t])) == full[:, :t]).all(), t
    for row in range(3):
        op = OnlinePatcher(cfg)
        online = [op.push(int(x), float(H[row, i - 1]) if i else None) for i, x in enumerate(toks[row])]
        assert online == full[row].tolist()


def test_entropies_are_per_row():
    _, em = tiny_models()
    rng = np.random.default_rng(2)
    toks = random_tokens(rng, (3, 30))
    batch = np.array(entropies(em, mx.array(toks)))
    for r in range(3):
        alone = np.array(entropies(em, mx.array(toks[r : r + 1])))[0]
        np.testing.assert_allclose(batch[r], alone, atol=1e-5)
    padded = np.concatenate([toks[:1, :20], np.zeros((1, 10), np.int32)], axis=1)
    np.testing.assert_allclose(np.array(entropies(em, mx.array(padded)))[0, :20], batch[0, :20], atol=1e-5)


# ---- hashing ----


def test_hash_ids_exact_no_overflow_and_deterministic_across_processes():
    rng = np.random.default_rng(3)
    toks = rng.integers(0, tokens.VOCAB_SIZE, (2, 50)).astype(np.int32)
    toks[0, :10] = tokens.VOCAB_SIZE - 1  # the largest ids, the worst case for overflow
    h = np.array(ngram_hashes(mx.array(toks), 3, 8))
    for b in range(2):
        for t in range(50):
            for k, n in enumerate(range(3, 9)):
                want = sum(int(toks[b, t - i]) * BASE**i if t >= i else 0 for i in range(n)) % MODULUS
                assert h[b, t, k] == want
    ids = np.array(hash_ids(mx.array(toks), 3, 6, 1000))
    assert ids.dtype == np.int32 and (ids >= 0).all()
    assert all(((ids[..., k] >= k * 1000) & (ids[..., k] < (k + 1) * 1000)).all() for k in range(4))
    code = (
        "import json, sys, mlx.core as mx; from blt.hashing import hash_ids; "
        "t = mx.array(json.loads(sys.stdin.read()), dtype=mx.int32); "
        "print(json.dumps(hash_ids(t, 3, 6, 1000).tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(toks.tolist()), capture_output=True, text=True,
        cwd=REPO, check=True, env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert json.loads(out.stdout) == ids.tolist()


# ---- causality and padding ----


@pytest.mark.parametrize("kind", KINDS)
def test_blt_is_causal_for_every_patcher(kind):
    model, em = tiny_models(kind)
    rng = np.random.default_rng(4)
    a = random_tokens(rng, (2, 48))
    for t in (5, 23, 40):
        b = a.copy()
        b[:, t:] = random_tokens(rng, (2, 48 - t))[:, : 48 - t]
        b[:, t] = a[:, t] % 200 + 5  # make sure position t itself changes
        la = model(mx.array(a), starts_for(model, em, mx.array(a)))
        lb = model(mx.array(b), starts_for(model, em, mx.array(b)))
        np.testing.assert_allclose(np.array(la[:, :t]), np.array(lb[:, :t]), atol=1e-5)
        assert np.abs(np.array(la[:, t:]) - np.array(lb[:, t:])).max() > 1e-3  # the test can fail


def test_baseline_is_causal():
    mx.random.seed(0)
    model = ByteTransformer(BaselineConfig(dim=32, n_layers=2, n_heads=2, window=8))
    rng = np.random.default_rng(5)
    a = random_tokens(rng, (2, 40))
    b = a.copy()
    b[:, 20:] = 7
    la, lb = np.array(model(mx.array(a))), np.array(model(mx.array(b)))
    np.testing.assert_allclose(la[:, :20], lb[:, :20], atol=1e-5)
    assert np.abs(la[:, 20:] - lb[:, 20:]).max() > 1e-3


@pytest.mark.parametrize("kind", ["entropy", "space"])
def test_padding_does_not_change_real_logits(kind):
    model, em = tiny_models(kind)
    rng = np.random.default_rng(6)
    rows = [random_tokens(rng, (1, n))[0] for n in (45, 30, 12)]
    batch = np.zeros((3, 64), np.int32)  # right-padded with PAD
    for i, r in enumerate(rows):
        batch[i, : len(r)] = r
    logits = np.array(model(mx.array(batch), starts_for(model, em, mx.array(batch))))
    for i, r in enumerate(rows):
        alone = model(mx.array(r[None]), starts_for(model, em, mx.array(r[None])))
        np.testing.assert_allclose(logits[i, : len(r)], np.array(alone)[0], atol=1e-5)
    # a generous fixed patch count (what a compiled trainer passes) gives the same logits
    st = starts_for(model, em, mx.array(batch))
    np.testing.assert_allclose(np.array(model(mx.array(batch), st, n_patches=64)), logits, atol=1e-5)


def test_rejects_patches_longer_than_max_patch_len():
    model, _ = tiny_models("space")
    toks = mx.array(random_tokens(np.random.default_rng(0), (1, 20)))
    starts = mx.zeros((1, 20), dtype=mx.bool_)
    with pytest.raises(ValueError, match="max_patch_len"):
        model(toks, starts)


# ---- checkpoints ----


def _logits(ck_model, em, toks):
    if isinstance(ck_model, BLT):
        return np.array(ck_model(toks, starts_for(ck_model, em, toks)))
    return np.array(ck_model(toks))


def test_checkpoint_roundtrip_identical_logits(tmp_path):
    model, em = tiny_models("entropy")
    toks = mx.array(random_tokens(np.random.default_rng(7), (2, 33)))
    path = tmp_path / "ck"
    save_checkpoint(
        path,
        model=model,
        config=model.cfg,
        entropy_model=em,
        entropy_config=model.cfg.entropy,
        metrics={"val_bpb": 2.5, "step": 10},
    )
    ck = load_checkpoint(path)
    assert ck.kind == "blt" and ck.metrics == {"val_bpb": 2.5, "step": 10} and ck.config == model.cfg
    assert ck.config.patcher.threshold == model.cfg.patcher.threshold
    np.testing.assert_array_equal(_logits(ck.model, ck.entropy_model, toks), _logits(model, em, toks))
    # saving again over it replaces it and leaves no temporary folders behind
    save_checkpoint(path, model=model, config=model.cfg, entropy_model=em, metrics={"step": 11})
    assert load_checkpoint(path).metrics == {"step": 11}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert json.loads((path / "config.json").read_text())["format_version"] == 1

    base = ByteTransformer(BaselineConfig(dim=32, n_layers=1, n_heads=2))
    save_checkpoint(
        tmp_path / "base",
        model=base,
        config=base.cfg,
        entropy_model=None,
        entropy_config=None,
        metrics={},
        kind="baseline",
    )
    ck = load_checkpoint(tmp_path / "base")
    assert ck.kind == "baseline" and ck.entropy_model is None
    np.testing.assert_array_equal(np.array(ck.model(toks)), np.array(base(toks)))


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model, em = tiny_models("entropy")
    path = tmp_path / "ck"
    save_checkpoint(path, model=model, config=model.cfg, entropy_model=em, metrics={"step": 1})
    import blt.checkpoint as ckmod

    calls = []
    original = mx.save_safetensors

    def failing_save(file, arrays, *args):
        calls.append(file)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C while the entropy model is written
        return original(file, arrays, *args)

    monkeypatch.setattr(ckmod.mx, "save_safetensors", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, config=model.cfg, entropy_model=em, metrics={"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path).metrics == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def _corrupt(path: Path, how: str) -> str:
    """Damage a saved checkpoint one way; return the file name the error must mention."""
    cfg_file = path / "config.json"
    meta = json.loads(cfg_file.read_text())
    if how == "missing model":
        (path / "model.safetensors").unlink()
        return "model.safetensors"
    if how == "missing entropy":
        (path / "entropy.safetensors").unlink()
        return "entropy.safetensors"
    if how == "missing metrics":
        (path / "metrics.json").unlink()
        return "metrics.json"
    if how == "truncated":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "model.safetensors"
    if how == "garbage":
        (path / "model.safetensors").write_bytes(b"\x00" * 7)
        return "model.safetensors"
    if how == "bad json":
        cfg_file.write_text("{not json")
        return "config.json"
    if how == "unknown key":
        meta["config"]["surprise"] = 1
    elif how == "version":
        meta["format_version"] = 99
    elif how == "shape mismatch":
        meta["config"]["hash_rows"] = 101
        cfg_file.write_text(json.dumps(meta))
        return "model.safetensors"
    elif how == "missing tensor":
        arrays = mx.load(str(path / "model.safetensors"))
        arrays.pop("head.weight")
        mx.save_safetensors(str(path / "model.safetensors"), arrays)
        return "model.safetensors"
    cfg_file.write_text(json.dumps(meta))
    return "config.json"


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing model", "missing"),
        ("missing entropy", "missing"),
        ("missing metrics", "missing"),
        ("truncated", "truncated or corrupt"),
        ("garbage", "truncated"),
        ("bad json", "not valid JSON"),
        ("unknown key", "unknown key.*surprise"),
        ("version", "format_version 99"),
        ("shape mismatch", "'hash_embed.table.weight' has shape \\(291, 32\\).*\\(303, 32\\)"),
        ("missing tensor", "missing \\['head.weight'\\]"),
    ],
)
def test_bad_checkpoints_raise_clear_errors(tmp_path, how, message):
    model, em = tiny_models("entropy")
    path = tmp_path / "ck"
    save_checkpoint(path, model=model, config=model.cfg, entropy_model=em, metrics={})
    fname = _corrupt(path, how)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert fname in str(err.value)


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load_checkpoint(tmp_path / "nowhere")


def test_save_refuses_to_clobber_a_non_checkpoint_folder(tmp_path):
    model, em = tiny_models("entropy")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        save_checkpoint(tmp_path / "mine", model=model, config=model.cfg, entropy_model=em, metrics={})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


# ---- it learns ----


def test_tiny_blt_loss_falls_on_repeated_text():
    mx.random.seed(0)
    cfg = tiny_config("space")
    model = BLT(cfg)
    text = b"the cat sat on the mat. the dog sat on the log. "
    data = np.array([tokens.BOS] + tokens.encode(text * 4), dtype=np.int32)
    rng = np.random.default_rng(0)
    opt = optim.AdamW(learning_rate=3e-3, betas=[0.9, 0.95], weight_decay=0.1)

    def loss_fn(m, x, st, y):
        return nn.losses.cross_entropy(m(x, st, n_patches=x.shape[1]), y, reduction="mean")

    step = nn.value_and_grad(model, loss_fn)
    losses = []
    for _ in range(60):
        offs = rng.integers(0, len(data) - 65, 4)
        x = np.stack([data[o : o + 64] for o in offs])
        y = np.stack([data[o + 1 : o + 65] for o in offs])
        st = patch_starts(x, cfg.patcher)
        loss, grads = step(model, mx.array(x), st, mx.array(y))
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state, loss)
        losses.append(loss.item())
    assert losses[0] > 4.5  # ~ln(260) at init
    assert np.mean(losses[-5:]) < 0.25 * losses[0], losses[::10]  # measured: 5.4 -> 0.13


# ---- copy features ----


def brute_match_next(row: list[int], n: int) -> list[int]:
    out = []
    for t in range(len(row)):
        hit = NO_MATCH
        if t >= n - 1:
            for s in range(t - 1, n - 2, -1):
                if row[s - n + 1 : s + 1] == row[t - n + 1 : t + 1]:
                    hit = row[s + 1]
                    break
        out.append(hit)
    return out


@pytest.mark.parametrize("n", [1, 3, 6])
def test_match_next_is_the_byte_after_the_last_earlier_match(n):
    rng = np.random.default_rng(n)
    x = rng.integers(4, 7, (3, 120)).astype(np.int32)  # a 3-letter alphabet: many matches, some misses
    got = np.array(match_next(mx.array(x), n))
    want = np.array([brute_match_next(r.tolist(), n) for r in x])
    np.testing.assert_array_equal(got, want)
    assert (want != NO_MATCH).any() and (want == NO_MATCH).any()
    # the last q positions alone, as incremental decoding asks for them
    np.testing.assert_array_equal(np.array(match_next(mx.array(x), n, 7)), want[:, -7:])


def test_copy_features_keep_the_blt_causal_on_repetitive_text():
    model, em = tiny_models("static")
    a = np.array([[tokens.BOS] + tokens.encode(TEXT[:30] * 3)], dtype=np.int32)
    assert model.copy_embed is not None
    for t in (20, 45, 70):
        b = a.copy()
        b[:, t:] = a[:, t:][:, ::-1]
        b[:, t] = a[:, t] % 200 + 5
        la = model(mx.array(a), starts_for(model, em, mx.array(a)))
        lb = model(mx.array(b), starts_for(model, em, mx.array(b)))
        np.testing.assert_allclose(np.array(la[:, :t]), np.array(lb[:, :t]), atol=1e-5)


def test_copy_features_incrementally_equal_the_full_pass():
    """CopyIndex (decoding, one byte at a time) and CopyEmbedding's context give the full pass's features."""
    mx.random.seed(0)
    emb = CopyEmbedding(16, (2, 4))
    row = [tokens.BOS] + tokens.encode(TEXT[:20] * 2)
    x = mx.array([row])
    full = emb(x)
    tail = emb(x[:, -5:], context=x[:, :-5])
    np.testing.assert_allclose(np.array(full[:, -5:]), np.array(tail), atol=1e-6)
    index = CopyIndex((2, 4))
    pushed = np.array([index.push(t) for t in row])
    for i, n in enumerate((2, 4)):
        np.testing.assert_array_equal(pushed[:, i], np.array(match_next(x, n))[0])
    np.testing.assert_allclose(np.array(emb.lookup(mx.array(pushed[None]))), np.array(full), atol=1e-6)
