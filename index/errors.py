"""The root of every error a user can cause, and the exit code each kind ends a command with.

It lives in `index`, the lowest layer that `ingest` and `rag` both import. `blt` imports none of our
packages, so its root is `blt.errors.BLTError`; `rag` translates those at its edges. The CLI catches
`ShvayambhuError` alone and exits with its `exit_code`:

    0  success
    1  data or user error (a bad file, a damaged store, an unreachable server, ...): `ShvayambhuError`
    2  usage error (a bad flag or option value): `UsageError`
    130 interrupted
"""

from __future__ import annotations

from typing import ClassVar


class ShvayambhuError(Exception):
    """Something the user can fix; the message says what happened and what to do next."""

    exit_code: ClassVar[int] = 1

    @classmethod
    def name(cls) -> str:
        return cls.__name__


class UsageError(ShvayambhuError, ValueError):
    """A flag, option or setting has a value the command cannot use."""

    exit_code: ClassVar[int] = 2
