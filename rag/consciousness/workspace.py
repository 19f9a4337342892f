"""The global workspace (Baars; Dehaene): candidates compete by explicit salience for a limited prompt budget.

Every candidate (self-model fact, exemplar, memory, reflection, recent turn) carries a salience in [0, 1].
`pack` takes pinned candidates first, then the rest by falling salience, greedily, while they fit the budget
(bytes or estimated tokens). A candidate that does not fit whole may be shortened at a word or character
boundary - never inside a character - when it says it may be. Winners and losers, with their scores, costs
and reasons, stay inspectable.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag.backends.base import BackendError

ELLIPSIS = "…"
UNITS = ("bytes", "tokens")


class BudgetError(BackendError):
    """The pinned parts of the prompt (self-model, question) alone exceed the budget."""


@dataclass
class Candidate:
    """One thing that may enter the prompt. `text` is exactly what the prompt will show for it."""

    kind: str  # self | exemplar | memory | reflection | turn
    text: str
    salience: float
    id: str = ""
    pinned: bool = False
    truncatable: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    cost: int = 0  # set by pack: what it costs (or would have cost) in the budget's unit
    truncated: bool = False
    reason: str = ""  # for losers: why it lost

    def to_dict(self, preview: int = 160) -> dict[str, Any]:
        text = " ".join(self.text.split())
        d: dict[str, Any] = {
            "kind": self.kind,
            "id": self.id,
            "salience": round(self.salience, 4),
            "cost": self.cost,
            "text": text if len(text) <= preview else text[: preview - 1] + ELLIPSIS,
        }
        if self.pinned:
            d["pinned"] = True
        if self.truncated:
            d["truncated"] = True
        if self.reason:
            d["reason"] = self.reason
        scores = {k: round(v, 4) for k, v in self.meta.get("scores", {}).items()}
        if scores:
            d["scores"] = scores
        return d


@dataclass
class Workspace:
    """The outcome of one competition: winners in salience order (pinned first), losers with reasons."""

    winners: list[Candidate]
    losers: list[Candidate]
    budget: int
    unit: str
    used: int  # what the winners cost, in `unit`

    def of_kind(self, *kinds: str) -> list[Candidate]:
        """Winners of the given kinds, in salience order."""
        return [c for c in self.winners if c.kind in kinds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "unit": self.unit,
            "used": self.used,
            "winners": [c.to_dict() for c in self.winners],
            "losers": [c.to_dict() for c in self.losers],
        }


def count_bytes(text: str) -> int:
    """UTF-8 length."""
    return len(text.encode("utf-8"))


def estimate_tokens(text: str) -> int:
    """A conservative token estimate without a tokenizer: ~4 bytes or ~0.75 words a token, the larger."""
    if not text:
        return 0
    return math.ceil(max(count_bytes(text) / 4.0, len(text.split()) * 1.35))


def measurer(unit: str) -> Callable[[str], int]:
    """The cost function for a budget unit."""
    if unit not in UNITS:
        raise ValueError(f"budget unit must be one of {UNITS}, not {unit!r}")
    return count_bytes if unit == "bytes" else estimate_tokens


def _safe_cut(text: str, end: int) -> int:
    """Move a cut at code point `end` back so that no combining mark, ZWJ or selector is split off."""
    while 0 < end < len(text):
        nxt, prev = text[end], text[end - 1]
        if (
            unicodedata.combining(nxt)
            or nxt in "\u200d\ufe0e\ufe0f"
            or "\U0001f3fb" <= nxt <= "\U0001f3ff"
            or prev == "\u200d"
            or 0xDC00 <= ord(nxt) <= 0xDFFF
        ):
            end -= 1
        else:
            break
    return end


def shorten(text: str, limit: int, measure: Callable[[str], int] = count_bytes, mark: str = ELLIPSIS) -> str:
    """The longest prefix of `text` that, with `mark` appended, costs at most `limit`; '' if none fits.

    Cuts between characters (and grapheme pieces), preferring the last word boundary in the final fifth.
    """
    if measure(text) <= limit:
        return text
    room = limit - measure(mark)
    if room <= 0:
        return ""
    lo, hi = 0, len(text)  # binary search the longest code-point prefix that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    end = _safe_cut(text, lo)
    space = max(text.rfind(" ", 0, end + 1), text.rfind("\n", 0, end + 1))
    if space > 0 and space >= end * 0.8:
        end = space
    head = text[:end].rstrip()
    return head + mark if head else ""


def pack(
    candidates: list[Candidate],
    budget: int,
    unit: str = "bytes",
    *,
    overhead: int = 0,
    min_fragment: int | None = None,
) -> Workspace:
    """Greedy packing: pinned first, then by salience (ties keep input order); each costs text + `overhead`.

    Pinned candidates must fit, else BudgetError. A truncatable candidate that does not fit whole is shortened
    to the room left when that room is at least `min_fragment` (default: 160 bytes or 40 tokens).
    """
    measure = measurer(unit)
    min_fragment = (160 if unit == "bytes" else 40) if min_fragment is None else min_fragment
    order = sorted(range(len(candidates)), key=lambda i: (not candidates[i].pinned, -candidates[i].salience, i))
    winners: list[Candidate] = []
    losers: list[Candidate] = []
    used = 0
    for i in order:
        c = candidates[i]
        c.cost = measure(c.text) + overhead
        room = budget - used
        if c.cost <= room:
            winners.append(c)
            used += c.cost
            continue
        if c.pinned:
            raise BudgetError(
                f"the prompt budget of {budget} {unit} cannot hold the self-model and the question "
                f"({used + c.cost} {unit} needed before any exemplar or memory): raise [workspace] "
                f"budget_{unit} or shorten the question"
            )
        if c.truncatable and room - overhead >= min_fragment:
            short = shorten(c.text, room - overhead, measure)
            if short:
                c.text, c.truncated, c.cost = short, True, measure(short) + overhead
                winners.append(c)
                used += c.cost
                continue
        c.reason = "budget"
        losers.append(c)
    return Workspace(winners=winners, losers=losers, budget=budget, unit=unit, used=used)


def evict(ws: Workspace, measure_total: Callable[[Workspace], int]) -> Workspace:
    """Drop the least salient unpinned winners until `measure_total(ws)` fits the budget (a safety net)."""
    while measure_total(ws) > ws.budget:
        free = [c for c in ws.winners if not c.pinned]
        if not free:
            raise BudgetError(
                f"the prompt budget of {ws.budget} {ws.unit} cannot hold the self-model and the question: "
                f"raise [workspace] budget_{ws.unit} or shorten the question"
            )
        worst = min(reversed(free), key=lambda c: c.salience)
        ws.winners.remove(worst)
        worst.reason = "overflow"
        ws.losers.append(worst)
        ws.used -= worst.cost
    return ws
