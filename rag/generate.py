"""Corpus generation through Ollama: prompts x models -> validated, append-only, resumable JSONL.

Prompts come from a file (JSONL with ``prompt`` [and ``category``], or one prompt a line) and/or from the
shipped topics x templates in ``ingest/data/prompts/``. Each (prompt, model) pair is asked once, through
``ollama.AsyncClient`` with a bounded number of requests in flight, retried with exponential backoff and
jitter on connection errors, 5xx answers and timeouts.

Durability: every record is one ``os.write`` of the whole line to an ``O_APPEND`` descriptor, so a process
killed at any moment (even ``kill -9``) leaves only whole lines: the kernel already holds each line once
``write`` returns. ``fsync`` only matters for power loss or an OS crash; it runs at most once per
``fsync_interval`` seconds (default 1 s) and at the end, which bounds such a loss to about a second of
answers that a rerun regenerates, at negligible cost next to generation itself. A rerun with the same
arguments repairs a torn last line (power loss, full disk), then skips every (prompt, model) pair already in
the output or the rejected file. An advisory lock keeps a second run off the same output.

Answers are asked for whole (``"stream": false``) unless ``stream=True``: streaming roughly doubles the
client's CPU per record and buys nothing here, since the per-request timeout bounds a stalled answer anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError
from ingest.records import Record, normalise
from ingest.validate import check_record
from rag.backends.base import GenerationOptions
from rag.backends.ollama import (
    OllamaBackend,
    OllamaError,
    canonical_model,
    list_models,
    resolve_host,
    to_ollama_options,
    translate_error,
)

CATEGORIES = ("self", "memory", "emotions", "ethics", "reasoning", "science", "technology", "creativity",
              "advice", "language")
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "ingest" / "data" / "prompts"
GENERATOR = "shvayambhu generate"
IngestFn = Callable[[list[Path]], Any]


class GenerateError(ShvayambhuError, RuntimeError):
    """Generation cannot start (bad arguments, unreadable prompts, no server); the message says why."""


# ---------------------------------------------------------------------------------------------------------
# Prompts


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
        raise GenerateError(f"cannot read prompts file {path}: {exc}") from None
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
                raise GenerateError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            prompt = obj.get("prompt") or obj.get("instruction")
            if obj.get("instruction") and obj.get("input"):
                prompt = f"{obj['instruction']}\n\n{obj['input']}"
            if not isinstance(prompt, str) or not prompt.strip():
                raise GenerateError(f"{path}:{lineno}: no 'prompt' field")
            category = obj.get("category")
            category = category if isinstance(category, str) else None
            items.append(PromptItem(prompt.strip(), category, source=where))
        else:
            items.append(PromptItem(line, source=where))
    return items


def shipped_prompts(
    categories: Iterable[str] | None = None, directory: Path = PROMPTS_DIR
) -> list[PromptItem]:
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


# ---------------------------------------------------------------------------------------------------------
# Durable JSONL


def repair_jsonl(path: str | Path) -> int:
    """Cut a torn or unreadable tail off `path` (a line without its newline, or one that is not JSON).

    Returns the number of bytes removed. Only the end is touched: append-only writers tear nothing else.
    """
    path = Path(path)
    if not path.exists():
        return 0
    removed = 0
    with open(path, "r+b") as f:
        while True:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                break
            start = _last_line_start(f, size)
            f.seek(start)
            tail = f.read(size - start)
            if tail.endswith(b"\n") and _parses(tail):
                break
            f.truncate(start)
            removed += size - start
        if removed:
            f.flush()
            os.fsync(f.fileno())
    return removed


def _last_line_start(f: Any, size: int) -> int:
    """Offset where the file's last line begins (a final newline belongs to that line)."""
    end = size - 1  # skip the last byte: if it is the newline, it ends the last line
    block = 65536
    while end > 0:
        lo = max(0, end - block)
        f.seek(lo)
        chunk = f.read(end - lo)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        end = lo
    return 0


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def read_done_keys(*paths: str | Path) -> tuple[set[tuple[str, str]], int]:
    """The (prompt, model) keys already present in the JSONL files, and how many lines could not be read."""
    keys: set[tuple[str, str]] = set()
    bad = 0
    for path in paths:
        if not Path(path).exists():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    keys.add(job_key(obj["prompt"], obj["model"]))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    bad += 1
    return keys, bad


class JsonlAppender:
    """Append-only JSONL: one ``os.write`` a line; fsync at most every `fsync_interval` s (0: every line).

    With `lock`, an exclusive advisory lock keeps a second writer out; with `lazy`, the file is only created
    by the first write.
    """

    def __init__(self, path: str | Path, fsync_interval: float = 1.0, *, lock: bool = False,
                 lazy: bool = False) -> None:
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self.fd = -1
        self._lock = lock
        self._last_sync = time.monotonic()
        self._dirty = False
        if not lazy:
            self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self._lock and not _try_lock(fd):
            os.close(fd)
            raise GenerateError(f"another `shvayambhu generate` is writing {self.path}; wait for it to "
                                "finish or pick another --out")
        self.fd = fd
        if created:
            _fsync_dir(self.path.parent)

    def write(self, obj: dict[str, Any]) -> None:
        """Append `obj` as one whole line."""
        if self.fd < 0:
            self._open()
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # a short write is rare (full disk); a torn tail is repaired on the next run
            view = view[os.write(self.fd, view):]
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        """fsync what was written since the last sync."""
        if self._dirty:
            os.fsync(self.fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync and close."""
        if self.fd >= 0:
            self.sync()
            os.close(self.fd)
            self.fd = -1


def _try_lock(fd: int) -> bool:
    """Lock `fd` exclusively (advisory; freed when it closes, even on kill -9); True if unsupported."""
    try:
        import fcntl
    except ImportError:  # Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rejected_path(out: str | Path) -> Path:
    """Where rejected answers go: ``corpus.jsonl`` -> ``corpus.rejected.jsonl``."""
    out = Path(out)
    if out.suffix == ".jsonl":
        return out.with_suffix(".rejected.jsonl")
    return out.with_name(out.name + ".rejected.jsonl")


# ---------------------------------------------------------------------------------------------------------
# Configuration and summary


@dataclass
class GenerateConfig:
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
    host: str | None = None  # Ollama URL; OLLAMA_HOST or localhost when None
    keep_alive: str | None = None
    concurrency: int = 4
    timeout: float = 300.0  # seconds per request attempt
    retries: int = 4  # extra attempts after a retryable failure
    backoff: float = 1.0  # first backoff in seconds, doubled per attempt, with jitter
    max_backoff: float = 30.0
    fsync_interval: float = 1.0
    stream: bool = False  # one JSON answer per request; streaming costs the client ~2x the CPU per record
    ingest: bool = False
    progress: bool = True

    def options(self) -> GenerationOptions:
        """The sampling options sent with every request."""
        return GenerationOptions(temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                                 max_tokens=self.num_predict)


@dataclass
class GenerateSummary:
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
    failure_kinds: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # the first few failure messages
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    ingest: Any = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def format_summary(s: GenerateSummary) -> str:
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
    for model, msg in s.model_errors.items():
        lines.append(f"model {model}: {msg}")
    for msg in s.failures[:5]:
        lines.append(f"failed: {msg}")
    if s.failed:
        lines.append("rerun the same command to retry what failed; finished pairs are skipped")
    if s.ingest is not None:
        lines.append(f"ingest: {s.ingest}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The run


def _validate(cfg: GenerateConfig) -> list[str]:
    models = list(dict.fromkeys(m.strip() for m in cfg.models if m and m.strip()))
    if not models:
        raise GenerateError("no model given: pass --models name[,name...]")
    if not 1 <= cfg.concurrency <= 100:
        raise GenerateError(f"--concurrency must be between 1 and 100 (got {cfg.concurrency})")
    if cfg.per_prompt is not None and cfg.per_prompt < 1:
        raise GenerateError("--per-prompt must be at least 1")
    if cfg.n is not None and cfg.n < 0:
        raise GenerateError("--n must not be negative")
    if cfg.timeout <= 0 or cfg.retries < 0:
        raise GenerateError("--timeout must be positive and --retries not negative")
    unknown = sorted(set(cfg.categories or ()) - set(CATEGORIES))
    if unknown and (cfg.shipped or cfg.prompts is None):
        raise GenerateError(f"unknown categories {unknown}; shipped ones are: {', '.join(CATEGORIES)}")
    return models


def collect_prompts(cfg: GenerateConfig) -> list[PromptItem]:
    """The prompts a config asks for, before sampling."""
    items: list[PromptItem] = []
    if cfg.prompts is not None:
        items.extend(load_prompt_file(cfg.prompts))
    if cfg.shipped or cfg.prompts is None:
        items.extend(shipped_prompts())
    if cfg.categories:
        wanted = set(cfg.categories)
        items = [i for i in items if i.category in wanted]
    return items


def run_generation(
    cfg: GenerateConfig,
    *,
    ingest_fn: IngestFn | None = None,
    on_progress: Callable[[GenerateSummary], None] | None = None,
) -> GenerateSummary:
    """Generate, validate and append every pending (prompt, model) pair of `cfg`; see the module docstring.

    With ``cfg.ingest`` the output is then ingested by `ingest_fn` (paths -> IngestSummary; the CLI passes
    its configured assistant's ``ingest``), by default ``rag.api.Shvayambhu().ingest``.
    """
    started = time.perf_counter()
    models = _validate(cfg)
    seed = cfg.seed if cfg.seed is not None else 0
    items = select_prompts(collect_prompts(cfg), cfg.n, seed)
    jobs = plan_jobs(items, models, cfg.per_prompt, seed)
    out, rej = Path(cfg.out), rejected_path(cfg.out)
    summary = GenerateSummary(out=str(out), rejected_out=str(rej), planned=len(jobs))
    out_w = JsonlAppender(out, cfg.fsync_interval, lock=True)  # one writer per output at a time
    try:
        rej_w = JsonlAppender(rej, cfg.fsync_interval, lazy=True)  # created by the first rejection
        try:
            _generate(cfg, jobs, summary, (out_w, rej_w), started, on_progress)
        finally:
            rej_w.close()
    finally:
        out_w.close()
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    answered = summary.done + summary.rejected
    summary.rate = round(answered / summary.elapsed_s, 3) if summary.elapsed_s > 0 else 0.0
    if cfg.ingest:
        summary.ingest = _ingest(out, ingest_fn)
    return summary


def _generate(cfg: GenerateConfig, jobs: list[Job], summary: GenerateSummary,
              writers: tuple[JsonlAppender, JsonlAppender], started: float,
              on_progress: Callable[[GenerateSummary], None] | None) -> None:
    """Repair, skip what is done, check the models, then run the rest."""
    out, rej = writers[0].path, writers[1].path
    summary.repaired_bytes = repair_jsonl(out) + repair_jsonl(rej)
    done, summary.unreadable_lines = read_done_keys(out, rej)
    seen: set[tuple[str, str]] = set()
    pending: list[Job] = []
    for job in jobs:
        if job.key in done or job.key in seen:
            summary.skipped += job.key in done
            continue
        seen.add(job.key)
        pending.append(job)
    if not pending:
        return
    try:
        pulled = set(list_models(cfg.host, timeout=min(10.0, cfg.timeout)))
    except OllamaError as exc:
        raise GenerateError(str(exc)) from None
    runnable: list[Job] = []
    for job in pending:
        name = canonical_model(job.model)
        if name in pulled:
            runnable.append(job)
            continue
        host = resolve_host(cfg.host)
        summary.model_errors.setdefault(name, f"Model '{job.model}' is not pulled on {host}: "
                                              f"run `ollama pull {job.model}`")
        summary.failed += 1
        summary.failure_kinds["not_pulled"] = summary.failure_kinds.get("not_pulled", 0) + 1
    asyncio.run(_run_jobs(runnable, cfg, summary, writers, started, on_progress))


def _ingest(out: Path, ingest_fn: IngestFn | None) -> Any:
    """Ingest the output; a failure is reported, not raised: the generated corpus is safe on disk."""
    try:
        if ingest_fn is None:  # lazy: the default store, embedding model and Chroma load only when asked
            from rag.api import Shvayambhu

            ingest_fn = Shvayambhu().ingest
        result = ingest_fn([out])
    except Exception as exc:  # noqa: BLE001
        return {"error": f"ingest failed ({type(exc).__name__}: {exc}); run `shvayambhu ingest {out}`"}
    if hasattr(result, "to_dict"):
        d = result.to_dict()
        d["rejections"] = [str(r) for r in getattr(result, "rejections", [])[:20]]
        return d
    return result if isinstance(result, (dict, list, str, int, float, type(None))) else str(result)


def _backoff(cfg: GenerateConfig, attempt: int) -> float:
    """Exponential backoff with 'equal jitter': half the capped delay fixed, half random."""
    cap = min(cfg.max_backoff, cfg.backoff * (2 ** attempt))
    return cap / 2 + random.uniform(0, cap / 2)


async def _ask(backend: OllamaBackend, job: Job, cfg: GenerateConfig, options: GenerationOptions) -> Any:
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": job.item.prompt}]
    if not cfg.stream:
        return await backend.agenerate(messages, options)
    async with contextlib.aclosing(backend.astream(messages, options)) as chunks:
        async for chunk in chunks:
            if chunk.done:
                return chunk.generation
    raise OllamaError(f"the stream from '{job.model}' ended without its final message", "dropped")


async def _attempt(backend: OllamaBackend, job: Job, cfg: GenerateConfig, options: GenerationOptions,
                   summary: GenerateSummary) -> Any:
    """One pair, retried on retryable failures; raises the last OllamaError."""
    attempt = 0
    while True:
        try:
            return await asyncio.wait_for(_ask(backend, job, cfg, options), cfg.timeout)
        except OllamaError as exc:
            err = exc
        except (TimeoutError, asyncio.TimeoutError) as exc:  # noqa: UP041 - distinct on 3.10
            err = translate_error(exc, host=backend.host, model=backend.model, timeout=cfg.timeout)
        if not err.retryable or attempt >= cfg.retries:
            raise err
        summary.retries += 1
        await asyncio.sleep(_backoff(cfg, attempt))
        attempt += 1


def _record(job: Job, gen: Any, cfg: GenerateConfig, options: dict[str, Any]) -> Record:
    meta: dict[str, Any] = {
        "generator": GENERATOR,
        "options": options,
        "done_reason": gen.done_reason,
        "timings": gen.timings,
        "source": job.item.source,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if cfg.system:
        meta["system"] = cfg.system
    if job.item.template:
        meta["template"] = job.item.template
        meta["topic"] = job.item.topic
    return Record(prompt=job.item.prompt, response=gen.text.strip(), model=canonical_model(job.model),
                  category=job.item.category, meta=meta)


async def _run_jobs(jobs: list[Job], cfg: GenerateConfig, summary: GenerateSummary,
                    writers: tuple[JsonlAppender, JsonlAppender], started: float,
                    on_progress: Callable[[GenerateSummary], None] | None) -> None:
    out_w, rej_w = writers
    options = cfg.options()
    sent_options = to_ollama_options(options)  # recorded in each record's meta
    backends = {m: OllamaBackend(cfg.host, m, timeout=cfg.timeout, keep_alive=cfg.keep_alive, logprobs=False)
                for m in {j.model for j in jobs}}
    queue = deque(jobs)
    dead: dict[str, str] = {}
    kinds: Counter[str] = Counter(summary.failure_kinds)
    reasons: Counter[str] = Counter()

    with _Progress(cfg.progress, len(jobs), started) as progress:

        def fail(message: str, kind: str) -> None:
            summary.failed += 1
            kinds[kind] += 1
            if len(summary.failures) < 20:
                summary.failures.append(message)

        async def worker() -> None:
            while queue:
                job = queue.popleft()
                if job.model in dead:
                    summary.failed += 1
                    kinds["not_pulled"] += 1
                else:
                    try:
                        gen = await _attempt(backends[job.model], job, cfg, options, summary)
                    except OllamaError as exc:
                        if exc.kind == "not_pulled":
                            dead[job.model] = str(exc)
                            summary.model_errors[canonical_model(job.model)] = str(exc)
                            summary.failed += 1
                            kinds["not_pulled"] += 1
                        else:
                            fail(f"{job.model}: {job.item.prompt[:60]!r}: {exc}", exc.kind)
                    else:
                        rec = _record(job, gen, cfg, sent_options)
                        reason = check_record(rec)
                        if reason is None:
                            out_w.write(rec.to_json())
                            summary.done += 1
                        else:
                            rej_w.write({**rec.to_json(), "reason": reason})
                            summary.rejected += 1
                            reasons[reason.split(":")[0]] += 1
                progress.advance(summary)
                if on_progress is not None:
                    on_progress(summary)

        try:
            await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, len(jobs)))))
        finally:
            summary.failure_kinds = dict(kinds)
            summary.rejection_reasons = dict(reasons)
            for b in backends.values():
                with contextlib.suppress(Exception):
                    await b.aclose()


class _Progress:
    """A live rich progress bar on stderr (done / rejected / failed, rate, ETA), or nothing."""

    def __init__(self, enabled: bool, total: int, started: float) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.started = started
        self._progress: Any = None
        self._task: Any = None
        self._count = 0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("generate", total=self.total, stats="")
        return self

    def advance(self, s: GenerateSummary) -> None:
        """One more pair finished (any outcome)."""
        self._count += 1
        if self._progress is None:
            return
        elapsed = max(1e-9, time.perf_counter() - self.started)
        stats = (f"[green]{s.done} done[/] [yellow]{s.rejected} rejected[/] [red]{s.failed} failed[/] "
                 f"{(s.done + s.rejected) / elapsed:.2f}/s")
        self._progress.update(self._task, completed=self._count, stats=stats)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# ---------------------------------------------------------------------------------------------------------
# CLI body


def cli_generate(
    out: Path,
    models: str,
    prompts: Path | None = None,
    shipped: bool = False,
    categories: str | None = None,
    n: int | None = None,
    seed: int | None = None,
    per_prompt: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    num_predict: int | None = None,
    system: str | None = None,
    ollama_host: str | None = None,
    keep_alive: str | None = None,
    concurrency: int = 4,
    timeout: float = 300.0,
    retries: int = 4,
    fsync_interval: float = 1.0,
    stream: bool = False,
    ingest: bool = False,
    json_output: bool = False,
    progress: bool = True,
    ingest_fn: IngestFn | None = None,
) -> int:
    """``shvayambhu generate``: run, print a summary (or JSON), return the exit code.

    0: everything planned is done; 1: some pairs failed or a model is not pulled (rerun to retry);
    2: nothing could start (bad arguments, unreadable prompts, server unreachable); 130: interrupted.
    """
    cfg = GenerateConfig(
        out=Path(out), models=[m for m in models.split(",") if m.strip()], prompts=prompts, shipped=shipped,
        categories=[c.strip() for c in categories.split(",") if c.strip()] if categories else None,
        n=n, seed=seed, per_prompt=per_prompt, temperature=temperature, top_p=top_p, num_predict=num_predict,
        system=system, host=ollama_host, keep_alive=keep_alive, concurrency=concurrency, timeout=timeout,
        retries=retries, fsync_interval=fsync_interval, stream=stream, ingest=ingest,
        progress=progress and not json_output and sys.stderr.isatty(),
    )
    try:
        summary = run_generation(cfg, ingest_fn=ingest_fn)
    except GenerateError as exc:
        if json_output:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: what was written to {cfg.out} is whole; rerun the same command to resume",
              file=sys.stderr)
        return 130
    if json_output:
        print(json.dumps(summary.to_json(), ensure_ascii=False, indent=2))
    else:
        print(format_summary(summary))
    return 1 if summary.failed else 0
