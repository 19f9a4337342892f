"""The one place where an error becomes what a person sees: one line on stderr and a documented exit code.

    0    success
    1    data or user error: a bad file, a damaged or unreachable store, a missing model, a backend that
         failed (`ShvayambhuError`, and errors from the edges translated into it)
    2    usage error: a bad flag, option or setting (`UsageError`, and click's own usage errors)
    130  interrupted (Ctrl-C)

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys

import typer

from blt.errors import BLTError
from index.errors import ShvayambhuError

EXIT_OK = 0
EXIT_ERROR = ShvayambhuError.exit_code
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def translate(exc: BaseException) -> ShvayambhuError | None:
    """`exc` as a ShvayambhuError with what to do next, or None when it is a bug (let it show a traceback)."""
    if isinstance(exc, ShvayambhuError):
        return exc
    if isinstance(exc, BLTError):  # blt imports none of our packages, so its root is translated here
        return ShvayambhuError(str(exc))
    if "index.store" in sys.modules:  # a store failure raised outside `translating`: full disk, damaged file
        known = sys.modules["index.store"].explain(exc)
        if known is not None:
            return known
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        what = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            return ShvayambhuError(f"{where}the disk is full: free some space and run the command again")
        if isinstance(exc, PermissionError):
            return ShvayambhuError(f"{where}permission denied: check the file's owner and mode")
        return ShvayambhuError(f"{where}{what}")
    return None


def report(exc: BaseException) -> int:
    """Print `exc` as one line when it is the user's to fix and return the exit code; re-raise a bug."""
    error = translate(exc)
    if error is None:
        raise exc
    typer.echo(f"error: {error}", err=True)
    return error.exit_code
