"""The prompt, built with langchain-core prompt templates, and the chat messages a backend receives.

Layout: one system message (the self-model, the instructions, low-confidence guidance when it applies, and
the workspace's exemplars, memories and reflections in salience order), the recent turns that won a place,
then the question. `render` gives plain chat messages (dicts with role and content) for the backends.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from rag.consciousness.workspace import Candidate, Workspace

SYSTEM_TEMPLATE = "{self_model}\n\n{instructions}{guidance}{workspace}"
INSTRUCTIONS = (
    "Answer the user's last message. Your workspace below holds exemplars (answers to similar questions "
    "from your corpus) and memories of earlier conversations, most salient first. Use them when they are "
    "relevant, adapt them rather than copy them, and cite an exemplar you rely on by its number, like [1]. "
    "Never invent a memory."
)
LOW_CONFIDENCE = (
    "\n\nYour evidence for this question is weak (confidence {confidence:.2f}): nothing in your workspace is "
    "close to it. If you do not know the answer, say plainly that you do not know, or what you are unsure "
    "of; do not make up facts or sources."
)
WORKSPACE_HEADER = "\n\nWorkspace (most salient first):\n\n"
BLOCK_SEP = "\n\n"
LABEL_ROOM = 6  # bytes reserved per block for its number label "[NN] "
ROLES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


@lru_cache(maxsize=1)
def chat_prompt() -> ChatPromptTemplate:
    """The ask prompt as a langchain-core template.

    Variables: self_model, instructions, guidance, workspace, question; `history` (messages) is optional.
    """
    return ChatPromptTemplate.from_messages(
        [("system", SYSTEM_TEMPLATE), MessagesPlaceholder("history", optional=True), ("human", "{question}")]
    )


def to_dicts(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """langchain messages -> backend chat messages."""
    role = {"system": "system", "human": "user", "ai": "assistant"}
    return [{"role": role.get(m.type, m.type), "content": str(m.content)} for m in messages]


def to_messages(turns: list[dict[str, str]]) -> list[BaseMessage]:
    """Backend chat messages -> langchain messages."""
    return [ROLES.get(t["role"], HumanMessage)(content=t["content"]) for t in turns]


# ---------------------------------------------------------------------------------------------------------
# Candidate texts


def exemplar_text(prompt: str, response: str) -> str:
    """How an exemplar reads in the workspace (its number is added when the prompt is rendered)."""
    return f"Exemplar Q: {' '.join(prompt.split())}\nA: {response.strip()}"


def memory_text(kind: str, age: str, text: str) -> str:
    """How a memory or reflection reads in the workspace."""
    label = "Reflection" if kind == "reflection" else "Memory"
    return f"{label} ({age}): {text.strip()}"


def block(c: Candidate, number: int | None) -> str:
    """One workspace block as it appears in the prompt."""
    return f"[{number}] {c.text}" if number is not None else c.text


def number_exemplars(ws: Workspace) -> dict[int, int]:
    """Candidate object id -> citation number for the exemplar winners, in salience order."""
    return {id(c): i for i, c in enumerate(ws.of_kind("exemplar"), 1)}


# ---------------------------------------------------------------------------------------------------------
# Rendering


def render(
    ws: Workspace | None,
    question: str,
    *,
    self_model: str = "",
    confidence: float | None = None,
    low_confidence: bool = False,
) -> list[dict[str, str]]:
    """Chat messages for a packed workspace. Self-model facts come from the workspace's pinned "self" winners
    when there are any, else from `self_model`; turns keep their chronological order."""
    winners = ws.winners if ws is not None else []
    facts = [c.text for c in winners if c.kind == "self"]
    numbers = number_exemplars(ws) if ws is not None else {}
    blocks = [block(c, numbers.get(id(c))) for c in winners if c.kind not in ("self", "turn")]
    turns = sorted((c for c in winners if c.kind == "turn"), key=lambda c: c.meta.get("index", 0))
    history = [ROLES.get(c.meta.get("role", "user"), HumanMessage)(content=c.text) for c in turns]
    guidance = LOW_CONFIDENCE.format(confidence=confidence or 0.0) if low_confidence else ""
    msgs = chat_prompt().format_messages(
        self_model="\n".join(facts) if facts else self_model,
        instructions=INSTRUCTIONS,
        guidance=guidance,
        workspace=WORKSPACE_HEADER + BLOCK_SEP.join(blocks) if blocks else "",
        history=history,
        question=question,
    )
    return to_dicts(msgs)


def base_messages(question: str, *, low_confidence: bool = False) -> list[dict[str, str]]:
    """The prompt with nothing from the workspace but the workspace header: the fixed part of the budget."""
    msgs = render(None, question, low_confidence=low_confidence, confidence=0.0)
    msgs[0]["content"] += WORKSPACE_HEADER
    return msgs


def flatten(messages: list[dict[str, str]]) -> str:
    """Messages as one readable text, for --show-prompt."""
    return "\n\n".join(f"<{m['role']}>\n{m['content']}" for m in messages)


def size(messages: list[dict[str, str]], measure: Any) -> int:
    """What messages cost in a budget: the sum over their contents."""
    return sum(measure(m["content"]) for m in messages)


# ---------------------------------------------------------------------------------------------------------
# Reflection


def reflection_messages(memories: list[str], n: int) -> list[dict[str, str]]:
    """Ask the backend for up to `n` higher-level statements that the memories support (Park et al.)."""
    listing = "\n".join(f"{i}. {' '.join(m.split())}" for i, m in enumerate(memories, 1))
    return [
        {
            "role": "system",
            "content": "You reflect on your own memories of conversations with a user and "
            "condense them into durable, higher-level insights.",
        },
        {
            "role": "user",
            "content": (
                f"Memories, oldest first:\n{listing}\n\nWhat are the {n} most important high-level "
                "insights about the user, their needs or our conversations that these memories support? "
                "Write each insight as one complete sentence on its own line, no numbering, nothing else."
            ),
        },
    ]


_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|insight\s*\d*\s*:)\s*", re.I)


def parse_reflections(text: str, n: int) -> list[str]:
    """Up to `n` distinct statements from a reflection answer: one a line, bullets and numbers removed."""
    from rag.postprocess import clean

    out: list[str] = []
    body, _ = clean(text)
    for line in body.splitlines():
        line = _BULLET.sub("", line).strip().strip('"').strip()
        if len(line) >= 12 and len(line.split()) >= 3 and line.lower() not in {o.lower() for o in out}:
            out.append(line)
        if len(out) >= n:
            break
    return out
