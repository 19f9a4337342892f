"""The float32 weight cache of a GGUF model (rag.backends.weight_cache): the first load dequantizes and writes
it, the second reads it back, both equal mlx-lm's own dequantization, and a damaged file is made again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

mx = pytest.importorskip("mlx.core")

from rag.backends import gguf, weight_cache  # noqa: E402
from rag.backends.mlx_light import light_mlx_lm  # noqa: E402


def _tiny(bits_embed: int = 8):
    """A tiny llama model quantized as a GGUF stores it (4-bit layers, 8-bit embedding, group 32): (args, the
    quantized tensors by mlx-lm name, the quantized model)."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    light_mlx_lm()
    from mlx_lm.models.llama import Model, ModelArgs

    args = ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=96,
        rope_traditional=True,
        tie_word_embeddings=True,
    )
    mx.random.seed(3)
    model = Model(args)
    bits = lambda path, m: {"group_size": 32, "bits": bits_embed if "embed" in path else 4}  # noqa: E731
    nn.quantize(model, class_predicate=lambda p, m: hasattr(m, "to_quantized") and bits(p, m))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    return args, weights, model


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def _fresh(args):
    from mlx_lm.models.llama import Model

    return Model(args)


def test_second_load_reads_the_cache_and_equals_mlx_lm_dequantization(cache_home, tmp_path, monkeypatch):
    from mlx.utils import tree_flatten
    from mlx_lm.utils import dequantize_model

    args, weights, quantized = _tiny()
    source = tmp_path / "tiny.Q4_0.gguf"
    source.write_bytes(b"stands in for the GGUF file: the cache key reads its path, size and mtime")
    reference = dict(tree_flatten(dequantize_model(quantized).parameters()))

    first = gguf.float_weights(source, weights, _fresh(args))
    target = weight_cache.cache_path(source)
    assert target.is_file() and target.parent == cache_home / "shvayambhu" / "mlx"
    assert set(first) == set(reference)
    for name, value in reference.items():
        assert first[name].dtype == mx.float32
        assert mx.array_equal(first[name], value.astype(mx.float32)).item(), name

    def no_dequantizing(_):
        raise AssertionError("the second load dequantized again instead of reading the cache")

    monkeypatch.setattr(gguf, "dequantized", no_dequantizing)
    model = _fresh(args)
    second = gguf.float_weights(source, weights, model)
    for name, value in reference.items():
        assert mx.array_equal(second[name], value).item(), name
    loaded = dict(tree_flatten(model.parameters()))
    assert mx.array_equal(loaded["model.embed_tokens.weight"], reference["model.embed_tokens.weight"]).item()


def test_a_truncated_or_misfitting_cache_is_made_again(cache_home, tmp_path, capsys):
    args, weights, _ = _tiny()
    source = tmp_path / "tiny.gguf"
    source.write_bytes(b"model v1")
    good = gguf.float_weights(source, weights, _fresh(args))
    target = weight_cache.cache_path(source)
    size = target.stat().st_size
    with open(target, "r+b") as f:
        f.truncate(size // 2)
    again = gguf.float_weights(source, weights, _fresh(args))
    assert "damaged" in capsys.readouterr().err
    assert target.stat().st_size == size
    assert all(mx.array_equal(again[n], good[n]).item() for n in good)

    mx.save_safetensors(str(target), {"model.norm.weight": mx.zeros((3,))})  # readable, but not this model
    again = gguf.float_weights(source, weights, _fresh(args))
    assert "do not fit the model" in capsys.readouterr().err
    assert target.stat().st_size == size and all(mx.array_equal(again[n], good[n]).item() for n in good)


def test_an_edited_model_gets_a_new_entry_and_the_old_one_goes(cache_home, tmp_path):
    args, weights, _ = _tiny()
    source = tmp_path / "tiny.gguf"
    source.write_bytes(b"model v1")
    gguf.float_weights(source, weights, _fresh(args))
    old = weight_cache.cache_path(source)
    source.write_bytes(b"model v2, a different size")
    gguf.float_weights(source, weights, _fresh(args))
    new = weight_cache.cache_path(source)
    assert new != old and new.is_file() and not old.exists()
    assert not [p for p in new.parent.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_light_import_keeps_transformers_out_until_asked():
    import subprocess

    code = (
        "import sys\n"
        "from rag.backends.mlx_light import light_mlx_lm\n"
        "light_mlx_lm()\n"
        "from mlx_lm.models.llama import Model\n"
        "from mlx_lm.models.cache import KVCache\n"
        "from mlx_lm.sample_utils import make_sampler\n"
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'heavy import'\n"
        "import mlx_lm\n"
        "assert callable(mlx_lm.load) and mlx_lm.__version__\n"  # the package's own names still there
    )
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr


class _Terminal:
    """A stand-in for stderr on a terminal."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_what_is_slow_is_said_on_a_terminal_only(monkeypatch, capsys):
    from rag.backends import mlx

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with mlx._saying("loading SmolLM2-135M-Instruct…"):
        assert term.text == "loading SmolLM2-135M-Instruct…"
    assert term.text.endswith("\r\x1b[K")  # erased once loaded: the answer starts on a clean line
    monkeypatch.undo()
    with mlx._saying("loading X…"):
        pass
    assert capsys.readouterr().err == ""  # not a terminal (a pipe, a log): nothing
