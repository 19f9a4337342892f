"""Checkpoints are checked against their weights before anything is built, and the one checkpoint cache
reloads a rewritten checkpoint. Tiny models; the whole file takes seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from blt.baseline import ByteTransformer
from blt.checkpoint import cached_checkpoint, export_checkpoint, load_checkpoint, save_checkpoint
from blt.config import BaselineConfig, BLTConfig, EntropyConfig, PatcherConfig
from blt.entropy import EntropyModel
from blt.errors import BLTError, CheckpointError
from blt.model import BLT
from blt.tensor_spec import tensor_spec

REPO = Path(__file__).resolve().parent.parent
ENTROPY = EntropyConfig(dim=32, n_layers=1, n_heads=2, window=16)
TINY = BLTConfig(
    max_bytes=128,
    ngram_min=3,
    ngram_max=4,
    hash_rows=97,
    enc_dim=32,
    enc_layers=1,
    enc_heads=2,
    local_window=16,
    global_dim=48,
    global_layers=2,
    global_heads=2,
    dec_dim=32,
    dec_layers=1,
    dec_heads=2,
    patcher=PatcherConfig(kind="entropy", max_patch_len=6),
    entropy=ENTROPY,
)


def save_tiny(path: Path, seed: int = 0) -> Path:
    mx.random.seed(seed)
    return save_checkpoint(path, model=BLT(TINY), config=TINY, entropy_model=EntropyModel(ENTROPY), metrics={})


def shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        replace(TINY, dec_dim=64, copy_short=0, copy_long=0, enc_layers=0, cross_k=3, mlp_mult=2),
        replace(TINY, copy_long=0, dec_layers=3),
        BaselineConfig(dim=64, n_layers=3, n_heads=2),
        ENTROPY,
    ],
    ids=["blt", "blt-variant", "blt-one-copy", "baseline", "entropy"],
)
def test_tensor_spec_is_what_the_modules_build(cfg) -> None:
    model = BLT(cfg) if isinstance(cfg, BLTConfig) else ByteTransformer(cfg)  # lazy: nothing is allocated
    assert {k: s for k, (s, _) in tensor_spec(cfg).items()} == shapes(model)


def _edit_config(path: Path, where: str, **fields) -> None:
    meta = json.loads((path / "config.json").read_text())
    meta[where].update(fields)
    if where == "entropy_config":
        meta["config"]["entropy"].update(fields)  # the two copies must agree, or that error comes first
    (path / "config.json").write_text(json.dumps(meta))


def test_absurd_configs_are_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    """Each bad config is refused with one line naming the file and the field, and the process's peak RSS
    hardly moves (measured in a fresh interpreter; building a billion layers would need many GB)."""
    cases = {"layers": tmp_path / "layers", "dim": tmp_path / "dim", "tensor": tmp_path / "tensor"}
    cases["entropy"] = tmp_path / "entropy"
    for p in cases.values():
        save_tiny(p)
    _edit_config(cases["layers"], "config", global_layers=1_000_000_000)
    _edit_config(cases["dim"], "config", global_dim=96)
    _edit_config(cases["entropy"], "entropy_config", n_layers=1_000_000_000)
    arrays = mx.load(str(cases["tensor"] / "model.safetensors"))
    arrays.pop("head.weight")
    mx.save_safetensors(str(cases["tensor"] / "model.safetensors"), arrays)

    script = (
        "import json, resource, sys\n"
        "from blt.checkpoint import load_checkpoint\n"
        "from blt.errors import CheckpointError\n"
        "rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "out = {}\n"
        "for name, path in json.loads(sys.argv[1]).items():\n"
        "    try:\n"
        "        load_checkpoint(path)\n"
        "        out[name] = None\n"
        "    except CheckpointError as e:\n"
        "        out[name] = str(e)\n"
        "out['grew_kb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0\n"
        "print(json.dumps(out))\n"
    )
    arg = json.dumps({k: str(v) for k, v in cases.items()})
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", script, arg], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["grew_kb"] < 50_000, got  # KB: a failed load must not build the model
    for name in cases:
        assert got[name] is not None and "\n" not in got[name], (name, got[name])
    assert "config.json" in got["layers"] and "config.global_layers is 1000000000" in got["layers"]
    assert "holds 2" in got["layers"]
    assert "config.json" in got["entropy"] and "entropy_config.n_layers is 1000000000" in got["entropy"]
    assert "model.safetensors" in got["dim"] and "config.global_dim=96" in got["dim"]
    assert "'pooler.proj.weight' has shape (48, 32), the config needs (96, 32)" in got["dim"]
    assert "model.safetensors" in got["tensor"] and "missing ['head.weight']" in got["tensor"]
    assert "config.dec_dim=32" in got["tensor"]


def test_a_huge_header_length_is_refused(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "ck")
    data = bytearray((path / "model.safetensors").read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt safetensors header length"):
        load_checkpoint(path)


def test_the_cache_reloads_a_rewritten_checkpoint(tmp_path: Path) -> None:
    from rag.backends.blt import BLTBackend

    path = save_tiny(tmp_path / "ck", seed=0)
    first = cached_checkpoint(path)
    assert cached_checkpoint(path) is first  # unchanged files: the same object
    backend = BLTBackend(path)
    assert backend.ckpt is first
    old = np.array(first.model.head.weight)

    other = save_tiny(tmp_path / "other", seed=1)
    export_checkpoint(other, path, dtype=None)  # e.g. `make checkpoint` rewrites the shipped folder
    second = cached_checkpoint(path)
    new = np.array(load_checkpoint(other).model.head.weight)
    assert second is not first and not np.array_equal(old, new)
    np.testing.assert_array_equal(np.array(second.model.head.weight), new)
    np.testing.assert_array_equal(np.array(backend.ckpt.model.head.weight), new)  # a live backend sees it too


def test_blt_errors_share_one_root(tmp_path: Path) -> None:
    with pytest.raises(BLTError):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(BLTError, match="not a checkpoint folder"):
        save_tiny(tmp_path / "mine")
    with pytest.raises(BLTError, match="unknown key"):
        BLTConfig.from_dict({"globl_dim": 1})
