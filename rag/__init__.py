"""Shvayambhu: a local retrieval-augmented assistant with memory and calibrated confidence.

    from rag import Shvayambhu
    answer = Shvayambhu().ask("Why is the sky blue?")

Names are imported on first use, so `import rag` (and the CLI's start) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Answer",
    "AnswerStream",
    "ChatSession",
    "Memory",
    "Settings",
    "Shvayambhu",
    "ShvayambhuError",
    "Source",
    "UsageError",
    "load_settings",
]

_WHERE = {
    "Shvayambhu": "rag.api",
    "ChatSession": "rag.api",
    "Answer": "rag.answer",
    "AnswerStream": "rag.pipeline",
    "Source": "rag.answer",
    "Memory": "rag.consciousness.memory",
    "Settings": "rag.config",
    "load_settings": "rag.config",
    "ShvayambhuError": "index.errors",
    "UsageError": "index.errors",
}

if TYPE_CHECKING:
    from index.errors import ShvayambhuError, UsageError
    from rag.answer import Answer, Source
    from rag.api import ChatSession, Shvayambhu
    from rag.config import Settings, load_settings
    from rag.consciousness.memory import Memory
    from rag.pipeline import AnswerStream


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rag' has no attribute {name!r}")
