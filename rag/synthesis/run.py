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
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from index.progress import progress_bar
from ingest.records import Record
from ingest.validate import check_record
from rag.backends.base import BackendError, GenerationOptions
from rag.backends.ollama import (
    OllamaBackend,
    OllamaError,
    canonical_model,
    list_models,
    to_ollama_options,
    translate_error,
)
from rag.synthesis.config import GENERATOR, SynthesisConfig, SynthesisError, SynthesisSummary, SynthesisUsageError
from rag.synthesis.jsonl import JsonlAppender, read_done_keys, rejected_path, repair_jsonl
from rag.synthesis.prompts import (
    CATEGORIES,
    Job,
    PromptItem,
    load_prompt_file,
    plan_jobs,
    select_prompts,
    shipped_prompts,
)

MLX_PREFIX = "mlx:"  # records of an in-process MLX run carry the model as mlx:<name or path>
MLX_BUNDLED = "SmolLM2-135M-Instruct"  # the model `--backend mlx` decodes with when no --models is given
IngestFn = Callable[[list[Path]], Any]


# ---------------------------------------------------------------------------------------------------------
# Prompts


# ---------------------------------------------------------------------------------------------------------
# Durable JSONL


# ---------------------------------------------------------------------------------------------------------
# Configuration and summary


# ---------------------------------------------------------------------------------------------------------
# The run


def collect_prompts(cfg: SynthesisConfig) -> list[PromptItem]:
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


def synthesize(
    cfg: SynthesisConfig,
    *,
    ingest_fn: IngestFn | None = None,
    on_progress: Callable[[SynthesisSummary], None] | None = None,
) -> SynthesisSummary:
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
    summary = SynthesisSummary(out=str(out), rejected_out=str(rej), planned=len(jobs))
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


def _generate(
    cfg: SynthesisConfig,
    jobs: list[Job],
    summary: SynthesisSummary,
    writers: tuple[JsonlAppender, JsonlAppender],
    started: float,
    on_progress: Callable[[SynthesisSummary], None] | None,
) -> None:
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
    if cfg.backend == "mlx":
        _run_local(pending, cfg, summary, writers, started, on_progress)
        return
    pulled: dict[str, set[str]] = {}  # host -> the models it has
    unreachable: dict[str, str] = {}
    for host in cfg.hosts():
        try:
            pulled[host] = set(list_models(host, timeout=min(10.0, cfg.timeout)))
        except OllamaError as exc:
            unreachable[host] = str(exc)
    if not pulled:
        raise SynthesisError("; ".join(unreachable.values()))
    summary.host_errors = unreachable
    available = set().union(*pulled.values())
    runnable: list[Job] = []
    for job in pending:
        name = canonical_model(job.model)
        if name in available:
            runnable.append(job)
            continue
        where = ", ".join(pulled)
        summary.model_errors.setdefault(
            name, f"Model '{job.model}' is not pulled on {where}: run `ollama pull {job.model}`"
        )
        summary.failed += 1
        summary.failure_kinds["not_pulled"] = summary.failure_kinds.get("not_pulled", 0) + 1
    asyncio.run(_run_jobs(runnable, cfg, summary, writers, started, on_progress, pulled))


def _ingest(out: Path, ingest_fn: IngestFn | None) -> Any:
    """Ingest the output; a failure is reported, not raised: the generated corpus is safe on disk."""
    try:
        if ingest_fn is None:  # lazy: the default store, embedding model and Chroma load only when asked
            from rag.api import Shvayambhu  # lazy: loads chromadb

            ingest_fn = Shvayambhu().ingest
        result = ingest_fn([out])
    except Exception as exc:  # noqa: BLE001
        return {"error": f"ingest failed ({type(exc).__name__}: {exc}); run `shvayambhu ingest {out}`"}
    if hasattr(result, "to_dict"):
        d = result.to_dict()
        d["rejections"] = [str(r) for r in getattr(result, "rejections", [])[:20]]
        return d
    return result if isinstance(result, (dict, list, str, int, float, type(None))) else str(result)


def _backoff(cfg: SynthesisConfig, attempt: int) -> float:
    """Exponential backoff with 'equal jitter': half the capped delay fixed, half random."""
    cap = min(cfg.max_backoff, cfg.backoff * (2**attempt))
    return cap / 2 + random.uniform(0, cap / 2)


async def _ask(backend: OllamaBackend, job: Job, cfg: SynthesisConfig, options: GenerationOptions) -> Any:
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": job.item.prompt}
    ]
    if not cfg.stream:
        return await backend.agenerate(messages, options)
    async with contextlib.aclosing(backend.astream(messages, options)) as chunks:
        async for chunk in chunks:
            if chunk.done:
                return chunk.generation
    raise OllamaError(f"the stream from '{job.model}' ended without its final message", "dropped")


async def _attempt(
    backend: OllamaBackend, job: Job, cfg: SynthesisConfig, options: GenerationOptions, summary: SynthesisSummary
) -> Any:
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


def _record(job: Job, gen: Any, cfg: SynthesisConfig, options: dict[str, Any]) -> Record:
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
    return Record(
        prompt=job.item.prompt,
        response=gen.text.strip(),
        model=canonical_model(job.model),
        category=job.item.category,
        meta=meta,
    )


async def _run_jobs(
    jobs: list[Job],
    cfg: SynthesisConfig,
    summary: SynthesisSummary,
    writers: tuple[JsonlAppender, JsonlAppender],
    started: float,
    on_progress: Callable[[SynthesisSummary], None] | None,
    pulled: dict[str, set[str]],
) -> None:
    """`cfg.concurrency` workers per host share one queue, each taking the next job whose model its host has,
    so a faster host takes more of the work."""
    options = cfg.options()
    sent_options = to_ollama_options(options)  # recorded in each record's meta
    backends = {
        (h, m): OllamaBackend(h, m, timeout=cfg.timeout, keep_alive=cfg.keep_alive, logprobs=False)
        for h, models in pulled.items()
        for m in {j.model for j in jobs}
        if canonical_model(m) in models
    }
    queue = deque(jobs)
    dead: dict[str, str] = {}  # model -> why, once no host has it any more
    kinds: Counter[str] = Counter(summary.failure_kinds)
    reasons: Counter[str] = Counter()

    with _Progress(cfg.progress, len(jobs), started) as progress:

        def fail(message: str, kind: str) -> None:
            summary.failed += 1
            kinds[kind] += 1
            if len(summary.failures) < 20:
                summary.failures.append(message)

        def take(host: str) -> Job | None:
            for i, job in enumerate(queue):
                if job.model in dead or (host, job.model) in backends:
                    del queue[i]
                    return job
            return None

        async def worker(host: str) -> None:
            while (job := take(host)) is not None:
                if job.model in dead:
                    summary.failed += 1
                    kinds["not_pulled"] += 1
                else:
                    try:
                        gen = await _attempt(backends[host, job.model], job, cfg, options, summary)
                    except OllamaError as exc:
                        if exc.kind == "not_pulled":  # gone from this host: another may still have it
                            await backends.pop((host, job.model)).aclose()
                            if not any(m == job.model for _, m in backends):
                                dead[job.model] = str(exc)
                                summary.model_errors[canonical_model(job.model)] = str(exc)
                            queue.appendleft(job)
                            continue
                        else:
                            fail(f"{job.model}: {job.item.prompt[:60]!r}: {exc}", exc.kind)
                    else:
                        _keep(_record(job, gen, cfg, sent_options), writers, summary, reasons)
                progress.advance(summary)
                if on_progress is not None:
                    on_progress(summary)

        try:
            n = min(cfg.concurrency, len(jobs))
            await asyncio.gather(*(worker(h) for h in pulled for _ in range(n)))
        finally:
            summary.failure_kinds = dict(kinds)
            summary.rejection_reasons = dict(reasons)
            for b in backends.values():
                with contextlib.suppress(Exception):
                    await b.aclose()


def _keep(
    rec: Record, writers: tuple[JsonlAppender, JsonlAppender], summary: SynthesisSummary, reasons: Counter[str]
) -> None:
    """Validate a generated record and append it to the output, or to the rejected file with its reason."""
    reason = check_record(rec)
    if reason is None:
        writers[0].write(rec.to_json())
        summary.done += 1
    else:
        writers[1].write({**rec.to_json(), "reason": reason})
        summary.rejected += 1
        reasons[reason.split(":")[0]] += 1


def _run_local(
    jobs: list[Job],
    cfg: SynthesisConfig,
    summary: SynthesisSummary,
    writers: tuple[JsonlAppender, JsonlAppender],
    started: float,
    on_progress: Callable[[SynthesisSummary], None] | None,
) -> None:
    """Decode the jobs in this process with the MLX model, `cfg.concurrency` conversations a batch; each answer
    is validated and appended the moment its batch ends, so a kill loses at most one batch."""
    from rag.backends.mlx import load_mlx_backend  # lazy: loads mlx and mlx-lm

    spec = jobs[0].model.removeprefix(MLX_PREFIX)
    try:
        backend = load_mlx_backend(None if spec == MLX_BUNDLED else spec)
    except BackendError as exc:
        raise SynthesisError(str(exc)) from None
    options = cfg.options()
    sent = {k: v for k, v in dataclasses.asdict(options).items() if v is not None}
    system = [{"role": "system", "content": cfg.system}] if cfg.system else []
    reasons: Counter[str] = Counter(summary.rejection_reasons)
    with _Progress(cfg.progress, len(jobs), started) as progress:
        for i in range(0, len(jobs), cfg.concurrency):
            batch = jobs[i : i + cfg.concurrency]
            conversations = [[*system, {"role": "user", "content": job.item.prompt}] for job in batch]
            for job, gen in zip(batch, backend.generate_batch(conversations, options), strict=True):
                _keep(_record(job, gen, cfg, sent), writers, summary, reasons)
                progress.advance(summary)
                if on_progress is not None:
                    on_progress(summary)
    summary.rejection_reasons = dict(reasons)


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
            self._progress = progress_bar(True, "[bold]generate", stats=True, keep=True)
            self._progress.start()
            self._task = self._progress.add_task("generate", total=self.total, stats="")
        return self

    def advance(self, s: SynthesisSummary) -> None:
        """One more pair finished (any outcome)."""
        self._count += 1
        if self._progress is None:
            return
        elapsed = max(1e-9, time.perf_counter() - self.started)
        stats = (
            f"[green]{s.done} done[/] [yellow]{s.rejected} rejected[/] [red]{s.failed} failed[/] "
            f"{(s.done + s.rejected) / elapsed:.2f}/s"
        )
        self._progress.update(self._task, completed=self._count, stats=stats)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# ---------------------------------------------------------------------------------------------------------
# CLI body


def _validate(cfg: SynthesisConfig) -> list[str]:
    models = list(dict.fromkeys(m.strip() for m in cfg.models if m and m.strip()))
    if cfg.backend not in ("ollama", "mlx"):
        raise SynthesisUsageError(f"--backend must be ollama or mlx, not {cfg.backend!r}")
    if cfg.backend == "mlx":
        if len(models) > 1:
            raise SynthesisUsageError("--backend mlx decodes with one model: give at most one --models")
        return [MLX_PREFIX + (models[0] if models else MLX_BUNDLED)]
    if not models:
        raise SynthesisUsageError("no model given: pass --models name[,name...]")
    if not 1 <= cfg.concurrency <= 100:
        raise SynthesisUsageError(f"--concurrency must be between 1 and 100 (got {cfg.concurrency})")
    if cfg.per_prompt is not None and cfg.per_prompt < 1:
        raise SynthesisUsageError("--per-prompt must be at least 1")
    if cfg.n is not None and cfg.n < 0:
        raise SynthesisUsageError("--n must not be negative")
    if cfg.timeout <= 0 or cfg.retries < 0:
        raise SynthesisUsageError("--timeout must be positive and --retries not negative")
    unknown = sorted(set(cfg.categories or ()) - set(CATEGORIES))
    if unknown and (cfg.shipped or cfg.prompts is None):
        raise SynthesisUsageError(f"unknown categories {unknown}; shipped ones are: {', '.join(CATEGORIES)}")
    return models
