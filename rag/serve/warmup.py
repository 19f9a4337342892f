"""Getting a server ready before its first question: the configured backend loaded, then one question answered
as far as its first piece and dropped.

That one question loads what every answer needs and would otherwise pay for on the first request: the store,
the embedding model's first run, the lexical index and the confidence calibration; the backend compiles its
decoding step for the usual prompt size and keeps the prompt's keys and values, which every later prompt shares
as far as the system prompt and the template head (rag.backends.prompt_cache). It runs in the model's queue like
any request, so it never generates at the same time as one; nothing is remembered. /healthz says `"warm": true`
once it is done.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from rag.consciousness.prompt import keep_head
from rag.serve.generation import MODEL, Engine, Target

log = logging.getLogger(__name__)
QUESTION = "What is this about?"  # when the store has no corpus yet: any question shares the template head


async def warm(engine: Engine) -> None:
    """Load the configured backend and answer QUESTION to its first piece; errors are left for the requests that
    meet them (logged here)."""
    try:
        backend = await anyio.to_thread.run_sync(engine._backend, Target(MODEL))
        place = engine.queue.admit(f"{backend.name}/{backend.model}")
        async with engine.queue.hold(place):
            await anyio.to_thread.run_sync(first_piece, engine.assistant, backend)
    except Exception as e:  # noqa: BLE001 - no backend, no corpus, a full queue: the first request reports it
        log.info("warm-up skipped: %s", e)
    finally:
        engine.warm = True


def first_piece(assistant: Any, backend: Any) -> None:
    """Answer a question through `backend` as far as the first text the model writes (after any words of the
    layer's own), then stop without remembering it; the fixed head of every prompt is read first."""
    keep_head(backend.profile)
    stream = assistant.stream(question(assistant), backend=backend, use_memory=False)
    try:
        text = ""
        for piece in stream:
            text += piece
            if len(text) > len(stream.prep.preface):
                break
    finally:
        stream.close()


def question(assistant: Any) -> str:
    """A question the corpus answers, so the prompt has the layout of an answered one (a passage quoted):
    the first stored record's own question; QUESTION when there is none."""
    try:
        corpus = assistant.corpus()
        got = corpus.get(limit=1, include=["metadatas"]) if corpus is not None else None
        meta = (got or {}).get("metadatas") or [{}]
        prompt = str((meta[0] or {}).get("prompt") or "").strip()
    except Exception:  # noqa: BLE001 - a store that cannot say: any question will do
        prompt = ""
    return prompt[:200] or QUESTION
