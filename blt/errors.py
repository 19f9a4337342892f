"""The errors a user of the byte model can cause; every one derives from ``BLTError``.

`blt` imports none of the project's other packages, so it has its own root; callers (rag) translate it.
The ``ValueError`` bases keep ``except ValueError`` callers working for bad arguments.
"""

from __future__ import annotations


class BLTError(Exception):
    """Root of every user-facing error raised by the `blt` package."""


class CheckpointError(BLTError):
    """A checkpoint folder is missing, incomplete, corrupt, or its config does not match its weights."""


class ConfigError(BLTError, ValueError):
    """A model or training configuration is invalid (unknown key, bad value, impossible combination)."""


class LayoutError(BLTError, ValueError):
    """A byte layout cannot be built as asked (e.g. a context too short to hold any response)."""


class GenerationError(BLTError, ValueError):
    """Decoding options are invalid (e.g. max_bytes < 1, a copy weight outside [0, 1])."""
