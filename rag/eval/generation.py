"""`shvayambhu eval generation`: answer held-out prompts under several configurations and score the answers.

A run is a folder: `run.json` (input and configurations), `results.jsonl` (one line per prompt per
configuration, appended as answers come, so a killed run resumes where it stopped), then `summary.json`,
`report.md` and PNG plots written from the results. The evaluator only needs an
`answer_fn(prompt, history, config) -> dict`; the default one asks `rag.api.Shvayambhu`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from index.embed import load_embedder
from index.progress import progress_bar
from rag.eval.examples import Example, GenerationError, load_examples
from rag.eval.judge import Judge
from rag.eval.report import write_report
from rag.eval.results import answer_to_dict, latest_rows, read_results

AnswerFn = Callable[[str, list[dict[str, str]], "GenConfig"], dict[str, Any]]
BpbFn = Callable[["Example", "GenConfig"], "float | None"]

CONFIG_KEYS = ("backend", "model", "k", "retrieval", "memory")
BACKENDS = ("ollama", "blt", "auto")
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


# ---- configurations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenConfig:
    """One way of answering: which backend and model, how many exemplars, retrieval and memory on or off."""

    name: str
    backend: str = "auto"
    model: str | None = None
    k: int | None = None
    retrieval: bool = True
    memory: bool = False  # off by default: with memory on, answers depend on the order prompts are asked

    def options(self) -> dict[str, Any]:
        """Everything but the name, for results lines and resume checks."""
        d = asdict(self)
        d.pop("name")
        return d


def _bool(key: str, value: str, spec: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise GenerationError(f"--config {spec!r}: {key} must be on or off, got {value!r}")


def parse_config(spec: str) -> GenConfig:
    """`NAME=key=value,key=value` (keys: backend, model, k, retrieval, memory) -> GenConfig.

    `NAME` alone, or `NAME=`, is the default configuration under that name."""
    name, _, rest = spec.partition("=")
    name = name.strip()
    if not name or not all(c.isalnum() or c in "._-" for c in name):
        raise GenerationError(f"--config {spec!r}: give NAME=OPTIONS, NAME of letters, digits, '.', '_', '-'")
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        key = {"use_retrieval": "retrieval", "use_memory": "memory", "top_k": "k"}.get(key, key)
        if not eq:
            raise GenerationError(f"--config {spec!r}: {part!r} is not key=value")
        if key not in CONFIG_KEYS:
            raise GenerationError(f"--config {spec!r}: unknown option {key!r}; use {', '.join(CONFIG_KEYS)}")
        value = value.strip()
        if key == "backend":
            if value not in BACKENDS:
                raise GenerationError(f"--config {spec!r}: backend must be one of {', '.join(BACKENDS)}")
            values[key] = value
        elif key == "model":
            values[key] = value or None
        elif key == "k":
            try:
                values[key] = int(value)
            except ValueError:
                raise GenerationError(f"--config {spec!r}: k must be an integer, got {value!r}") from None
            if values[key] < 0:
                raise GenerationError(f"--config {spec!r}: k must be 0 or more")
        else:
            values[key] = _bool(key, value, spec)
    return GenConfig(name=name, **values)


def parse_configs(specs: Iterable[str]) -> list[GenConfig]:
    """Parse every --config; names must be unique. None given: one configuration named `default`."""
    configs = [parse_config(s) for s in specs]
    names = [c.name for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GenerationError(f"--config names must be unique; repeated: {', '.join(dup)}")
    return configs or [GenConfig("default")]


# ---- examples ----------------------------------------------------------------------------------------


# ---- answering ---------------------------------------------------------------------------------------


def shvayambhu_answer_fn(settings: Any = None, session_prefix: str = "eval") -> AnswerFn:
    """The default answer_fn: `Shvayambhu(settings).ask(...)`; sources get their response text from the store.

    With memory on, each configuration talks in its own session `<session_prefix>-<config name>`."""
    from rag.api import Shvayambhu  # lazy: loads chromadb

    app = Shvayambhu(settings)

    def answer(prompt: str, history: list[dict[str, str]], config: GenConfig) -> dict[str, Any]:
        ans = app.ask(
            prompt,
            backend=config.backend,
            model=config.model,
            k=config.k,
            use_retrieval=config.retrieval,
            use_memory=config.memory,
            session=f"{session_prefix}-{config.name}" if config.memory else None,
            history=history or None,
        )
        out = answer_to_dict(ans)
        _fill_sources(app, out["sources"])
        return out

    return answer


def _fill_sources(app: Any, sources: list[dict[str, Any]]) -> None:
    """Best effort: the response text of each source, so a judge can check faithfulness against it."""
    ids = [s["id"] for s in sources if "id" in s and "response" not in s]
    if not ids:
        return
    try:
        got = app.collection().get(ids=ids, include=["metadatas"])
    except Exception:  # noqa: BLE001 - memories and other sources may live elsewhere; the judge copes
        return
    meta = dict(zip(got["ids"], got["metadatas"] or [], strict=False))
    for s in sources:
        m = meta.get(s.get("id")) or {}
        if "response" not in s and m.get("response"):
            s["response"] = m["response"]


def default_bpb_fn() -> BpbFn:
    """BPB of the reference under the BLT the configuration names (its checkpoint, or the shipped one)."""
    from blt.bpb import response_bpb  # lazy: loads mlx, needed only when a configuration uses the BLT

    def fn(example: Example, config: GenConfig) -> float | None:
        return response_bpb(example.prompt, example.reference, history=example.history, model=config.model)

    return fn


# ---- scoring -----------------------------------------------------------------------------------------


class _Scorer:
    """chrF (sacrebleu, 0-100), ROUGE-L F1 (rouge-score, stemmed) and embedding cosine to the reference."""

    def __init__(self, embedder: Any = None) -> None:
        from rouge_score import rouge_scorer  # lazy: loads rouge_score
        from sacrebleu.metrics import CHRF  # lazy: loads sacrebleu

        self._chrf = CHRF()
        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = load_embedder()
        return self._embedder

    def score(self, answer: str, reference: str) -> dict[str, float]:
        vecs = self.embedder.embed([answer or " ", reference or " "])
        return {
            "chrf": float(self._chrf.sentence_score(answer, [reference]).score),
            "rouge_l": float(self._rouge.score(reference, answer)["rougeL"].fmeasure),
            "embed_sim": float(vecs[0] @ vecs[1]),
        }


def _finite(value: Any) -> float | None:
    """A metric as a float, or None for a missing, non-numeric or non-finite one (never NaN in the files)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _row(
    example: Example,
    config: GenConfig,
    got: dict[str, Any],
    wall_ms: float,
    scorer: _Scorer,
    judge: Judge | None,
    bpb_fn: BpbFn | None,
) -> dict[str, Any]:
    answer = str(got.get("answer") or "")
    timings = {k: float(v) for k, v in (got.get("timings") or {}).items() if isinstance(v, (int, float))}
    gen_ms = timings.get("generate") or timings.get("total") or wall_ms
    n_bytes = len(answer.encode("utf-8"))
    conf = got.get("confidence")
    metrics: dict[str, float | None] = {
        **scorer.score(answer, example.reference),
        "confidence": float(conf) if isinstance(conf, (int, float)) else None,
        "latency_ms": wall_ms,
        "bytes_per_s": n_bytes / (gen_ms / 1000) if gen_ms > 0 else None,
        "answer_bytes": float(n_bytes),
    }
    row: dict[str, Any] = {}
    if bpb_fn is not None and (config.backend == "blt" or got.get("backend") == "blt"):
        try:
            metrics["bpb"] = bpb_fn(example, config)
        except Exception as e:  # noqa: BLE001 - a missing checkpoint should not lose the answer
            row["bpb_error"] = f"{type(e).__name__}: {e}"
    sources = answer_to_dict({"sources": got.get("sources")})["sources"]
    if judge is not None:
        v = judge.judge(example.prompt, answer, sources)
        metrics["judge_faithfulness"] = v.faithfulness
        metrics["judge_relevance"] = v.relevance
        row["judge"] = v.to_dict()
    metrics = {k: _finite(v) for k, v in metrics.items()}
    norm = " ".join(example.prompt.split()).lower()
    row.update(
        {
            "backend": got.get("backend"),
            "model": got.get("model"),
            "low_confidence": got.get("low_confidence"),
            "answer": answer,
            "metrics": metrics,
            "timings": timings,
            "sources": [{k: v for k, v in s.items() if k in ("id", "score", "prompt")} for s in sources],
            "leak": any(" ".join(str(s.get("prompt", "")).split()).lower() == norm for s in sources),
        }
    )
    return row


# ---- the run -----------------------------------------------------------------------------------------


def _check_run(folder: Path, meta: dict[str, Any], configs: Sequence[GenConfig]) -> dict[str, Any]:
    path = folder / "run.json"
    if not path.exists():
        return meta
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise GenerationError(f"{path}: unreadable ({e}); use another --out or --fresh") from None
    before = old.get("configs", {})
    for c in configs:
        if c.name in before and before[c.name] != c.options():
            raise GenerationError(
                f"{folder}: configuration {c.name!r} was {before[c.name]} in this run, now {c.options()}; "
                "give it another name, use another --out, or start over with --fresh"
            )
    merged = {**before, **{c.name: c.options() for c in configs}}
    out = {**old, **meta, "configs": merged, "created": old.get("created", meta["created"])}
    out["judge"] = meta.get("judge") or old.get("judge")
    out["input"] = meta.get("input") or old.get("input")
    return out


@dataclass
class GenerationRun:
    """What a run did and where it wrote."""

    folder: Path
    answered: int
    skipped: int
    errors: int
    summary: dict[str, Any]
    files: list[Path]


def run_generation(
    examples: Sequence[Example],
    configs: Sequence[GenConfig],
    out: str | Path,
    *,
    answer_fn: AnswerFn,
    judge: Judge | None = None,
    embedder: Any = None,
    bpb_fn: BpbFn | None = None,
    notes: Sequence[str] = (),
    input_name: str = "",
    fresh: bool = False,
    progress: bool = False,
    max_consecutive_errors: int = 5,
    bootstrap: int = 1000,
    plots: bool = True,
) -> GenerationRun:
    """Answer every example under every configuration (skipping what results.jsonl already holds), then
    write summary.json, report.md and the plots."""

    if not examples:
        raise GenerationError("no examples to evaluate")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "results.jsonl"
    if fresh:
        for name in ("results.jsonl", "run.json"):
            (folder / name).unlink(missing_ok=True)
    meta = {
        "input": input_name,
        "examples": len(examples),
        "configs": {c.name: c.options() for c in configs},
        "judge": judge.name if judge else None,
        "notes": list(notes),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta = _check_run(folder, meta, configs)
    (folder / "run.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    done = {k for k, r in latest_rows(read_results(results)[0]).items() if not r.get("error")}
    todo = [(c, e) for c in configs for e in examples if (e.id, c.name) not in done]
    skipped = len(configs) * len(examples) - len(todo)
    scorer = _Scorer(embedder)
    answered = errors = 0
    aborted: dict[str, str] = {}
    if results.exists() and results.stat().st_size:
        with results.open("rb") as f:  # a run killed mid-line leaves no newline: start a fresh line
            f.seek(-1, 2)
            tail = f.read(1)
        if tail != b"\n":
            with results.open("ab") as f:
                f.write(b"\n")
    with results.open("a", encoding="utf-8") as sink, progress_bar(progress) as bar:
        task = bar.add_task("answering", total=len(todo))
        streak: dict[str, int] = {}
        for config, example in todo:
            bar.advance(task)
            if config.name in aborted:
                continue
            bar.update(task, description=f"answering [{config.name}]")
            base = {
                "example_id": example.id,
                "config": config.name,
                "options": config.options(),
                "source": example.source,
                "prompt": example.prompt,
                "reference": example.reference,
                "turns_before": len(example.history),
            }
            t = time.perf_counter()
            try:
                got = answer_fn(example.prompt, list(example.history), config)
                wall_ms = (time.perf_counter() - t) * 1000
                row = {**base, **_row(example, config, got, wall_ms, scorer, judge, bpb_fn), "error": None}
                answered += 1
                streak[config.name] = 0
            except Exception as e:  # noqa: BLE001 - one failed answer is a recorded error, not a lost run
                row = {
                    **base,
                    "error": f"{type(e).__name__}: {e}",
                    "metrics": {"latency_ms": (time.perf_counter() - t) * 1000},
                }
                errors += 1
                streak[config.name] = streak.get(config.name, 0) + 1
                if max_consecutive_errors and streak[config.name] >= max_consecutive_errors:
                    aborted[config.name] = f"stopped after {streak[config.name]} errors in a row: {row['error']}"
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
    summary, files = write_report(folder, bootstrap=bootstrap, plots=plots, aborted=aborted)
    return GenerationRun(folder, answered, skipped, errors, summary, files)


def default_out_dir(input_name: str, configs: Sequence[GenConfig]) -> Path:
    """`eval-results/generation-<input>-<hash>`: the same command resumes into the same folder."""
    key = json.dumps([input_name, [(c.name, c.options()) for c in configs]], sort_keys=True)
    stem = Path(input_name).stem if input_name else "heldout"
    return Path("eval-results") / f"generation-{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def generation_command(
    inputs: Sequence[str | Path] | None = None,
    *,
    configs: Sequence[str] = (),
    out: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    judge_model: str | None = None,
    judge_host: str | None = None,
    judge_timeout: float = 60.0,
    judge_retries: int = 2,
    fresh: bool = False,
    progress: bool = True,
    plots: bool = True,
    bootstrap: int = 1000,
    settings: Any = None,
    answer_fn: AnswerFn | None = None,
    embedder: Any = None,
) -> GenerationRun:
    """The body of `shvayambhu eval generation`. Raises GenerationError with a message for the user."""
    cfgs = parse_configs(configs)
    examples, problems = load_examples(inputs, split=split, limit=limit)
    if not examples:
        where = ", ".join(map(str, inputs)) if inputs else "the bundled corpus's held-out split"
        raise GenerationError(f"no usable examples in {where}" + (f": {problems[0]}" if problems else ""))
    input_name = ",".join(map(str, inputs)) if inputs else "corpus:heldout"
    notes = list(problems[:20]) + ([f"... {len(problems) - 20} more input problems"] if len(problems) > 20 else [])
    bpb_fn = None
    if any(c.backend == "blt" for c in cfgs):
        bpb_fn = default_bpb_fn()
    judge = Judge.ollama(judge_model, judge_host, timeout=judge_timeout, retries=judge_retries) if judge_model else None
    return run_generation(
        examples,
        cfgs,
        out or default_out_dir(input_name, cfgs),
        answer_fn=answer_fn or shvayambhu_answer_fn(settings),
        judge=judge,
        embedder=embedder,
        bpb_fn=bpb_fn,
        notes=notes,
        input_name=input_name,
        fresh=fresh,
        progress=progress,
        bootstrap=bootstrap,
        plots=plots,
    )
