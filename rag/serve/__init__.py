"""`shvayambhu serve`: an OpenAI- and Ollama-compatible HTTP API over `Shvayambhu`, and a web page.

    from rag.serve import run
    run(settings, host="127.0.0.1", port=8765, api_key=None)

Names load on first use, so importing this package does not import FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServeOptions", "create_app", "run", "start_in_thread"]

_WHERE = {
    "ServeOptions": "rag.serve.options",
    "create_app": "rag.serve.app",
    "run": "rag.serve.runner",
    "start_in_thread": "rag.serve.runner",
}

if TYPE_CHECKING:
    from rag.serve.app import create_app
    from rag.serve.options import ServeOptions
    from rag.serve.runner import run, start_in_thread


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rag.serve' has no attribute {name!r}")
