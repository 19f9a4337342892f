"""The root of blt's errors. blt imports none of our packages, so `rag` translates these at its edges."""

from __future__ import annotations


class BLTError(Exception):
    """A checkpoint, config or input the BLT cannot use; the message says what and what to do."""
