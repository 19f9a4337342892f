"""Optional dependencies: the extras of pyproject.toml that a command needs, and the one line when one is missing.

The core install (`pip install shvayambhu`) runs ingest, search, ask, chat, train and the Python API; a command
that needs more checks its extra here before it imports anything of it.
"""

from __future__ import annotations

import importlib.util

import typer

from rag.cli.errors import EXIT_USAGE

# extra -> the modules it provides (as imported); keep in step with [project.optional-dependencies]
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "python_multipart"),
    "eval": ("sacrebleu", "rouge_score", "matplotlib"),
    "documents": ("markitdown",),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    missing = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def missing_extra_line(command: str, extra: str) -> str:
    """The one line that names the missing extra and how to install it."""
    return f"shvayambhu {command}: needs the [{extra}] extra: pip install 'shvayambhu[{extra}]'"


def require_extra(command: str, extra: str) -> None:
    """Stop `command` with one line (exit 2) when the modules of `extra` are not installed."""
    if missing_modules(extra):
        typer.echo(missing_extra_line(command, extra), err=True)
        raise typer.Exit(EXIT_USAGE)
