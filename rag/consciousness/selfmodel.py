"""The self-model: who the assistant is, what it values and how it speaks, from the [self_model] settings.

It is always in the prompt (its facts are pinned in the workspace) and `shvayambhu self` shows it. Users edit
it in their config file (``[self_model]`` table) or with SHVAYAMBHU_SELF_MODEL_* variables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rag.config import SelfModelSettings


@dataclass
class SelfModel:
    """Identity, values and style; `facts()` are the lines the workspace pins into every prompt."""

    name: str
    identity: str
    values: list[str] = field(default_factory=list)
    style: str = ""

    @classmethod
    def from_settings(cls, s: SelfModelSettings) -> SelfModel:
        return cls(
            name=s.name.strip(),
            identity=s.identity.strip(),
            values=[v.strip() for v in s.values if v.strip()],
            style=s.style.strip(),
        )

    def facts(self) -> list[tuple[str, str]]:
        """(label, text) pairs, most central first: identity, then each value, then style."""
        out = [("identity", f"You are {self.name}, {_end(self.identity)}")]
        out += [("value", f"You value: {_end(v)}") for v in self.values]
        if self.style:
            out.append(("style", f"Your style: {_end(self.style)}"))
        return out

    def render(self) -> str:
        """The self-model as prompt text, one fact a line."""
        return "\n".join(text for _, text in self.facts())

    def describe(self) -> str:
        """A human-readable description for `shvayambhu self`."""
        lines = [f"name:     {self.name}", f"identity: {self.identity}", "values:"]
        lines += [f"  - {v}" for v in self.values] or ["  (none)"]
        lines.append(f"style:    {self.style or '(none)'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _end(text: str) -> str:
    """`text` as a sentence: a final period unless it already ends with punctuation."""
    return text if text.endswith((".", "!", "?", "…")) else text + "."
