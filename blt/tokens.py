"""Byte tokens: ids 0-3 are specials, a byte b is id b + OFFSET (the BLT reference layout, vocabulary 260)."""

from __future__ import annotations

from collections.abc import Iterable

PAD = 0
BOS = 1
EOS = 2
SEP = 3
OFFSET = 4
VOCAB_SIZE = 256 + OFFSET
SPECIALS = (PAD, BOS, EOS, SEP)


def encode(data: bytes | str) -> list[int]:
    """Byte ids of ``data`` (a str is encoded as UTF-8); no specials are added."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return [b + OFFSET for b in data]


def decode(ids: Iterable[int]) -> bytes:
    """The bytes of ``ids``, dropping special ids."""
    return bytes(i - OFFSET for i in ids if OFFSET <= i < VOCAB_SIZE)
