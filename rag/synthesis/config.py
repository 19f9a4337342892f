"""What a synthesis run is asked to do and what it did: its configuration, its summary, their checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError, UsageError
from rag.backends.base import GenerationOptions
from rag.backends.ollama import resolve_host

GENERATOR = "shvayambhu generate"


class SynthesisError(ShvayambhuError, RuntimeError):
    """Generation cannot start (bad arguments, unreadable prompts, no server); the message says why."""


class SynthesisUsageError(SynthesisError, UsageError):
    """A synthesis option has a value the run cannot use (exit code 2)."""


@dataclass
class SynthesisConfig:
    """Everything one generation run needs; a rerun with the same config resumes."""

    out: Path
    models: list[str]
    prompts: Path | None = None  # JSONL or one prompt a line
    shipped: bool = False  # add the shipped topics x templates (the default when no prompts file is given)
    categories: list[str] | None = None  # keep only prompts of these categories
    n: int | None = None  # sample this many prompts
    seed: int | None = None  # sampling seed (0 when unset); also Ollama's seed when set
    per_prompt: int | None = None  # models per prompt, drawn from `models`
    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = None
    system: str | None = None
    host: str | None = None  # Ollama URL, or several separated by commas; OLLAMA_HOST or localhost when None
    keep_alive: str | None = None
    concurrency: int = 4  # requests in flight per host
    timeout: float = 300.0  # seconds per request attempt
    retries: int = 4  # extra attempts after a retryable failure
    backoff: float = 1.0  # first backoff in seconds, doubled per attempt, with jitter
    max_backoff: float = 30.0
    fsync_interval: float = 1.0
    stream: bool = False  # one JSON answer per request; streaming costs the client ~2x the CPU per record
    ingest: bool = False
    progress: bool = True

    def hosts(self) -> list[str]:
        """The Ollama base URLs to spread the jobs over, each once, in the order given."""
        given = [h.strip() for h in (self.host or "").split(",") if h.strip()] or [None]
        return list(dict.fromkeys(resolve_host(h) for h in given))

    def options(self) -> GenerationOptions:
        """The sampling options sent with every request."""
        return GenerationOptions(
            temperature=self.temperature, top_p=self.top_p, seed=self.seed, max_tokens=self.num_predict
        )


@dataclass
class SynthesisSummary:
    """What a run did."""

    out: str
    rejected_out: str
    planned: int = 0  # (prompt, model) pairs in the plan
    skipped: int = 0  # already done by an earlier run
    done: int = 0  # written to `out` by this run
    rejected: int = 0  # written to `rejected_out` by this run
    failed: int = 0  # not answered (errors after retries, models not pulled); a rerun tries them again
    retries: int = 0
    elapsed_s: float = 0.0
    rate: float = 0.0  # answers (written or rejected) per second
    repaired_bytes: int = 0
    unreadable_lines: int = 0
    model_errors: dict[str, str] = field(default_factory=dict)  # model -> why it was given up
    host_errors: dict[str, str] = field(default_factory=dict)  # host -> why it was left out
    failure_kinds: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # the first few failure messages
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    ingest: Any = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def format_summary(s: SynthesisSummary) -> str:
    """A few human lines."""
    lines = [
        f"generated {s.done} records into {s.out} ({s.rejected} rejected, {s.failed} failed, "
        f"{s.skipped} already done of {s.planned}; {s.retries} retries) "
        f"in {s.elapsed_s:.1f} s, {s.rate:.2f}/s",
    ]
    if s.repaired_bytes:
        lines.append(f"repaired a torn last line ({s.repaired_bytes} bytes cut)")
    if s.rejected:
        ranked = sorted(s.rejection_reasons.items(), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{k}: {v}" for k, v in ranked)
        lines.append(f"rejected -> {s.rejected_out} ({reasons})")
    for host, msg in s.host_errors.items():
        lines.append(f"  host left out: {host}: {msg}")
    for model, msg in s.model_errors.items():
        lines.append(f"model {model}: {msg}")
    for msg in s.failures[:5]:
        lines.append(f"failed: {msg}")
    if s.failed:
        lines.append("rerun the same command to retry what failed; finished pairs are skipped")
    if s.ingest is not None:
        lines.append(f"ingest: {s.ingest}")
    return "\n".join(lines)
