"""An LLM judge through Ollama: faithfulness of an answer to its sources and relevance to the question (1-5).

A judge that answers badly is counted, never trusted: an unparsable or out-of-range reply is a parse failure,
retried up to `retries` times; a timeout is retried too. A verdict that never came has None scores and says
why, so a summary can report how many answers were judged and how many failed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rag.backends.base import GenerationOptions
from rag.backends.ollama import OllamaBackend

SCALE = (1.0, 5.0)
MAX_SOURCE_CHARS = 1500
SYSTEM = (
    "You are a strict, impartial evaluator of answers written by an assistant. "
    "You reply with a single JSON object and nothing else."
)


class JudgeParseError(ValueError):
    """The judge's reply holds no usable scores."""


@dataclass
class Verdict:
    """Scores on the 1-5 scale (None: not applicable or not obtained) and how getting them went."""

    faithfulness: float | None = None
    relevance: float | None = None
    attempts: int = 0
    parse_failures: int = 0
    timeouts: int = 0
    errors: int = 0
    error: str | None = None  # why no verdict came; None when one did
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _source_text(s: Any) -> str:
    if isinstance(s, str):
        return s
    get = s.get if isinstance(s, dict) else (lambda k, d=None: getattr(s, k, d))
    parts = [str(get("prompt") or "").strip(), str(get("response") or get("text") or "").strip()]
    return "\n".join(p for p in parts if p)[:MAX_SOURCE_CHARS]


def judge_messages(question: str, answer: str, sources: Sequence[Any]) -> list[dict[str, str]]:
    """The chat messages sent to the judge; faithfulness is asked for only when there are sources."""
    texts = [t for t in (_source_text(s) for s in sources) if t]
    lines = [f"Question:\n{question.strip()}\n"]
    if texts:
        lines.append("Sources the assistant was given:")
        lines += [f"[{i}] {t}" for i, t in enumerate(texts, start=1)]
        lines.append("")
    lines.append(f"Answer to evaluate:\n{answer.strip() or '(empty answer)'}\n")
    lines.append("Rate the answer on integer scales from 1 to 5:")
    if texts:
        lines.append(
            "- faithfulness: are the answer's claims supported by the sources? "
            "5 = every claim is supported, 3 = some claims are unsupported, 1 = it contradicts or invents."
        )
    lines.append("- relevance: does the answer address the question? 5 = fully, directly; 3 = partly; 1 = off-topic.")
    keys = '{"faithfulness": <1-5>, "relevance": <1-5>}' if texts else '{"relevance": <1-5>}'
    lines.append(f"Reply with only this JSON object: {keys}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


_OBJECT = re.compile(r"\{[^{}]*\}", re.S)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise JudgeParseError(f"{key} is not a number: {value!r}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*5)?\s*", value)
        if not m:
            raise JudgeParseError(f"{key} is not a number: {value!r}")
        value = float(m.group(1))
    if not isinstance(value, (int, float)) or value != value:
        raise JudgeParseError(f"{key} is not a number: {value!r}")
    if not SCALE[0] <= float(value) <= SCALE[1]:
        raise JudgeParseError(f"{key} = {value} is outside 1-5")
    return float(value)


def parse_verdict(text: str, keys: Sequence[str]) -> dict[str, float]:
    """Scores for `keys` from a judge reply: a JSON object anywhere in it, else `key: n` pairs."""
    found: dict[str, Any] = {}
    for m in _OBJECT.finditer(text or ""):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            low = {str(k).strip().lower(): v for k, v in obj.items()}
            if all(k in low for k in keys):
                found = {k: low[k] for k in keys}
                break
    if not found:
        for k in keys:
            m = re.search(rf'{k}["\s]*[:=]\s*"?([0-9]+(?:\.[0-9]+)?)', text or "", re.I)
            if m:
                found[k] = m.group(1)
    missing = [k for k in keys if k not in found]
    if missing:
        raise JudgeParseError(f"no {', '.join(missing)} in the reply: {(text or '')[:120]!r}")
    return {k: _number(found[k], k) for k in keys}


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or getattr(exc, "kind", None) == "timeout" or "timed out" in str(exc).lower()


class Judge:
    """Asks a model (any `generate(messages) -> str`) for scores; see `Judge.ollama` for the usual one."""

    def __init__(
        self,
        generate: Callable[[list[dict[str, str]]], str],
        *,
        retries: int = 2,
        name: str = "judge",
        backoff_s: float = 0.0,
    ) -> None:
        self.generate = generate
        self.retries = max(0, retries)
        self.name = name
        self.backoff_s = backoff_s

    @classmethod
    def ollama(cls, model: str, host: str | None = None, *, timeout: float = 60.0, retries: int = 2) -> Judge:
        """A judge served by Ollama (temperature 0), through the project's Ollama backend."""

        backend = OllamaBackend(host, model, timeout=timeout, logprobs=False)
        opts = GenerationOptions(temperature=0.0, seed=0, max_tokens=200)
        return cls(
            lambda messages: backend.generate(messages, opts).text,
            retries=retries,
            name=f"ollama:{model}",
            backoff_s=0.5,
        )

    def judge(self, question: str, answer: str, sources: Sequence[Any] = ()) -> Verdict:
        """Scores for one answer; never raises for a bad judge, the Verdict says what went wrong."""
        messages = judge_messages(question, answer, sources)
        keys = ["faithfulness", "relevance"] if any(_source_text(s) for s in sources) else ["relevance"]
        v = Verdict()
        last = ""
        for attempt in range(self.retries + 1):
            v.attempts += 1
            if attempt and self.backoff_s:
                time.sleep(self.backoff_s * attempt)
            try:
                reply = self.generate(messages)
            except Exception as exc:  # noqa: BLE001 - any judge failure is recorded, not raised
                if _is_timeout(exc):
                    v.timeouts += 1
                    last = f"timeout: {exc}"
                else:
                    v.errors += 1
                    last = f"{type(exc).__name__}: {exc}"
                continue
            v.raw = (reply or "")[:500]
            try:
                scores = parse_verdict(reply, keys)
            except JudgeParseError as exc:
                v.parse_failures += 1
                last = f"unparsable reply: {exc}"
                continue
            v.faithfulness = scores.get("faithfulness")
            v.relevance = scores["relevance"]
            v.error = None
            return v
        v.error = f"no verdict after {v.attempts} attempt(s); last: {last}"
        return v
