"""GGUF headers read through the `gguf` package: tensor types named, and truncated or hostile headers refused in
one line before anything large is allocated or looped over."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from rag.backends.base import BackendError
from rag.backends.gguf import check_tensor_types, gguf_tensor_types

ARRAY, UINT8, INT32, STRING = 9, 0, 5, 8


def _string(s: str) -> bytes:
    return struct.pack("<Q", len(s)) + s.encode()


def _gguf(path: Path, *, kv: bytes = b"", n_kv: int = 1, tensors: int = 1, type_id: int = 0, data: int = 1024) -> Path:
    """A GGUF v3 file: ``kv`` (default: one string value), then ``tensors`` 256-element tensors of ``type_id``
    and ``data`` zero bytes of tensor data."""
    kv = kv or _string("general.architecture") + struct.pack("<I", STRING) + _string("llama")
    header = b"GGUF" + struct.pack("<IQQ", 3, tensors, n_kv) + kv
    for i in range(tensors):
        header += _string(f"blk.{i}.attn_q.weight") + struct.pack("<IQ", 1, 256) + struct.pack("<IQ", type_id, 0)
    header += b"\0" * (-len(header) % 32)
    path.write_bytes(header + b"\0" * data)
    return path


def test_tensor_types_are_read_and_an_unsupported_one_is_named(tmp_path):
    assert list(gguf_tensor_types(_gguf(tmp_path / "f32.gguf", tensors=2))) == [
        ("blk.0.attn_q.weight", "F32"),
        ("blk.1.attn_q.weight", "F32"),
    ]
    check_tensor_types(tmp_path / "f32.gguf")  # F32 is fine
    with pytest.raises(BackendError, match=r"'blk\.0\.attn_q\.weight' has type Q5_K, which MLX cannot read"):
        check_tensor_types(_gguf(tmp_path / "q5k.gguf", type_id=13))


def test_a_large_vocabulary_is_stepped_over_quickly_and_the_tensors_after_it_are_right(tmp_path):
    """A 200,000-string array (SmolLM2 has ~98,000) and a 200,000-number array before the tensor infos: the
    stock reader takes seconds here (numpy views per item); ours steps over them at once, to the right place."""
    from rag.backends.gguf import _reader_class

    words = [f"w{i}" * (1 + i % 3) for i in range(200_000)]
    kv = _string("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, len(words))
    kv += b"".join(_string(w) for w in words)
    kv += _string("tokenizer.ggml.token_type") + struct.pack("<IIQ", ARRAY, INT32, 200_000)
    kv += struct.pack("<200000i", *range(200_000))
    path = _gguf(tmp_path / "vocab.gguf", kv=kv, n_kv=2, tensors=3, type_id=1, data=3 * 512)
    started = time.perf_counter()
    ours = _reader_class()(path)
    assert time.perf_counter() - started < 3  # the stock reader: ~15 s on this CPU, ours ~0.1 s
    assert [(t.name, t.tensor_type.name) for t in ours.tensors] == [(f"blk.{i}.attn_q.weight", "F16") for i in range(3)]
    assert {t.data_offset for t in ours.tensors} == {path.stat().st_size - 3 * 512}  # where the data starts
    assert ours.fields["tokenizer.ggml.token_type"].contents() == list(range(200_000))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"GGUF\x03\x00"), "truncated or corrupt GGUF header"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 40), "not a GGUF file"),
        (lambda p: p.write_bytes(b"GGUF" + struct.pack("<IQQ", 7, 0, 0)), "GGUF version 7 is not supported"),
        # counts the file cannot hold: refused from the first 24 bytes
        (lambda p: _gguf(p, n_kv=2**60), r"metadata values cannot fit in \d+ bytes"),
        (lambda p: _gguf(p, tensors=1, n_kv=1, data=0) and p.write_bytes(p.read_bytes()[:60]), "corrupt GGUF header"),
        # an array that states 2**40 items in a small file: the reader would loop on past its end
        (
            lambda p: _gguf(p, kv=_string("x") + struct.pack("<IIQ", ARRAY, UINT8, 2**40) + b"\1\2\3"),
            "truncated or corrupt GGUF header",
        ),
        # an array of 2**40 strings in a small file, and one whose last string runs past the end
        (
            lambda p: _gguf(p, kv=_string("x") + struct.pack("<IIQ", ARRAY, STRING, 2**40) + _string("a")),
            "truncated or corrupt GGUF header",
        ),
        (
            lambda p: p.write_bytes(
                b"GGUF"
                + struct.pack("<IQQ", 3, 0, 1)
                + _string("x")
                + struct.pack("<IIQ", ARRAY, STRING, 2)
                + _string("a")
                + struct.pack("<Q", 5)
                + b"bc"
            ),
            "truncated or corrupt GGUF header",
        ),
        # tensor data past the end of the file (a truncated download)
        (lambda p: _gguf(p, data=16), "truncated or corrupt GGUF header"),
        # a string key whose length runs past the end of the file
        (lambda p: _gguf(p, kv=struct.pack("<Q", 2**62) + b"abc"), "truncated or corrupt GGUF header"),
    ],
)
def test_a_truncated_or_hostile_header_is_one_clear_error(tmp_path, make, message):
    path = tmp_path / "bad.gguf"
    make(path)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=message) as e:
        list(gguf_tensor_types(path))
    assert time.perf_counter() - started < 5  # refused at once, not after a loop over a stated count
    assert str(path) in str(e.value) and "\n" not in str(e.value)
