"""The prompts a synthesis run asks: prompt files, the shipped topic lists, sampling, and the job plan."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ingest.bundled import PROMPTS_DIR
from ingest.records import normalise
from rag.backends.ollama import canonical_model
from rag.synthesis.config import SynthesisError

CATEGORIES = (
    "self",
    "memory",
    "emotions",
    "ethics",
    "reasoning",
    "science",
    "technology",
    "creativity",
    "advice",
    "language",
)


@dataclass
class PromptItem:
    """One prompt to ask, with where it came from."""

    prompt: str
    category: str | None = None
    template: str | None = None
    topic: str | None = None
    source: str = ""


def load_prompt_file(path: str | Path) -> list[PromptItem]:
    """Prompts from `path`: JSONL objects with ``prompt`` (or ``instruction``) and optional ``category``,
    or plain text with one prompt a line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SynthesisError(f"cannot read prompts file {path}: {exc}") from None
    items: list[PromptItem] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{lineno}"
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SynthesisError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            prompt = obj.get("prompt") or obj.get("instruction")
            if obj.get("instruction") and obj.get("input"):
                prompt = f"{obj['instruction']}\n\n{obj['input']}"
            if not isinstance(prompt, str) or not prompt.strip():
                raise SynthesisError(f"{path}:{lineno}: no 'prompt' field")
            category = obj.get("category")
            category = category if isinstance(category, str) else None
            items.append(PromptItem(prompt.strip(), category, source=where))
        else:
            items.append(PromptItem(line, source=where))
    return items


def shipped_prompts(categories: Iterable[str] | None = None, directory: Path = PROMPTS_DIR) -> list[PromptItem]:
    """Every topic x template prompt shipped in ``ingest/data/prompts/`` (optionally only some categories)."""
    wanted = set(categories) if categories else None
    items: list[PromptItem] = []
    for path in sorted(directory.glob("*.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        category = spec["category"]
        if wanted is not None and category not in wanted:
            continue
        for template in spec["templates"]:
            for topic in spec["topics"]:
                prompt = template.format(topic=topic)
                items.append(PromptItem(prompt, category, template, topic, f"shipped:{category}"))
    return items


def select_prompts(items: list[PromptItem], n: int | None, seed: int) -> list[PromptItem]:
    """Drop duplicate prompts (first kept), then sample `n` reproducibly from `seed`, keeping input order."""
    seen: set[str] = set()
    unique: list[PromptItem] = []
    for item in items:
        key = normalise(item.prompt)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    if n is None or n >= len(unique):
        return unique
    chosen = set(random.Random(seed).sample(range(len(unique)), n))
    return [item for i, item in enumerate(unique) if i in chosen]


@dataclass
class Job:
    """One (prompt, model) pair to generate."""

    item: PromptItem
    model: str

    @property
    def key(self) -> tuple[str, str]:
        return job_key(self.item.prompt, self.model)


def job_key(prompt: str, model: str) -> tuple[str, str]:
    """What identifies a pair across runs: the normalised prompt and the model's full name."""
    return normalise(prompt), canonical_model(model)


def plan_jobs(items: list[PromptItem], models: list[str], per_prompt: int | None, seed: int) -> list[Job]:
    """Each prompt to each model, or to `per_prompt` models drawn per prompt (stable across runs)."""
    jobs: list[Job] = []
    for item in items:
        chosen = models
        if per_prompt is not None and per_prompt < len(models):
            chosen = random.Random(f"{seed}\x00{normalise(item.prompt)}").sample(models, per_prompt)
        jobs.extend(Job(item, m) for m in chosen)
    return jobs
