"""A run's results file: one JSON line per (example, configuration), read back by the runner and the report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def answer_to_dict(answer: Any) -> dict[str, Any]:
    """An Answer (object or dict) as the plain dict the evaluator records."""
    sources = []
    for s in _get(answer, "sources") or []:
        d = {k: _get(s, k) for k in ("id", "score", "prompt", "response", "text", "kind", "used")}
        sources.append({k: v for k, v in d.items() if v is not None and v != ""})
    timings = dict(_get(answer, "timings") or {})
    return {
        "answer": str(_get(answer, "answer", _get(answer, "text", "")) or ""),
        "confidence": _get(answer, "confidence"),
        "low_confidence": _get(answer, "low_confidence"),
        "backend": _get(answer, "backend"),
        "model": _get(answer, "model"),
        "sources": sources,
        "timings": {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))},
    }


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(rows, unreadable lines) of a results.jsonl; a line cut short by a kill is skipped, not fatal."""
    rows, bad = [], 0
    if not path.exists():
        return rows, 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                bad += 1
                continue
            if isinstance(obj, dict) and "example_id" in obj and "config" in obj:
                rows.append(obj)
            else:
                bad += 1
    return rows, bad


def latest_rows(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last line for each (example, config): a retried error is replaced by its later answer."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["example_id"], r["config"])
        if key not in out or out[key].get("error") or not r.get("error"):
            out[key] = r
    return out
