"""The `shvayambhu` command line: a thin layer over `rag.api.Shvayambhu`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rag.config import Settings, load_settings

app = typer.Typer(
    name="shvayambhu",
    help=(
        "A local retrieval-augmented assistant with memory, calibrated confidence and its own byte-level model.\n\n"
        "Settings come from defaults, then a TOML file (--config, $SHVAYAMBHU_CONFIG or ~/.shvayambhu/config.toml), "
        "then SHVAYAMBHU_* environment variables (e.g. SHVAYAMBHU_HOME, SHVAYAMBHU_OLLAMA_MODEL), then flags. "
        'Store options go before the command: `shvayambhu --data-dir DIR search "..."`.'
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state: dict[str, Any] = {}


def settings(**section_overrides: Any) -> Settings:
    """The settings of this invocation: global flags plus the command's own (`section={field: value}`)."""
    overrides: dict[str, Any] = {k: dict(v) for k, v in _state.get("overrides", {}).items()}
    for key, value in section_overrides.items():
        if isinstance(value, dict):
            clean = {k: v for k, v in value.items() if v is not None}
            if clean:
                overrides.setdefault(key, {}).update(clean)
        elif value is not None:
            overrides[key] = value
    return load_settings(_state.get("config"), overrides)


def assistant(**section_overrides: Any) -> Any:
    from rag.api import Shvayambhu

    return Shvayambhu(settings(**section_overrides))


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def _global(
    config: Annotated[Path | None, typer.Option(help="TOML settings file.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (embedded Chroma, memories) [$SHVAYAMBHU_HOME].")
    ] = None,
    chroma_host: Annotated[str | None, typer.Option(help="Use a `chroma run` server at this host.")] = None,
    chroma_port: Annotated[int | None, typer.Option(help="Port of the Chroma server.")] = None,
    collection: Annotated[str | None, typer.Option(help="Corpus collection name [corpus].")] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="sentence-transformers model name or path [all-MiniLM-L6-v2, packaged]."),
    ] = None,
    embed: Annotated[str | None, typer.Option(help="What is embedded for a pair: prompt, response or both.")] = None,
) -> None:
    _state["config"] = config
    _state["overrides"] = {
        "store": {
            k: v
            for k, v in {
                "data_dir": str(data_dir) if data_dir else None,
                "chroma_host": chroma_host,
                "chroma_port": chroma_port,
                "collection": collection,
            }.items()
            if v is not None
        },
        "embedding": {k: v for k, v in {"model": embedding_model, "embed_field": embed}.items() if v is not None},
    }


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="JSONL/JSON/.txt/.md files or folders (recursive).")],
    prune: Annotated[bool, typer.Option(help="Remove records of these sources that are no longer in them.")] = False,
    strict: Annotated[bool, typer.Option(help="Any rejected record is fatal and nothing is written.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Validate, embed and store a corpus; re-running adds nothing new, edits replace old versions."""
    summary = assistant().ingest(paths, prune=prune, strict=strict)
    if as_json:
        d = summary.to_dict()
        d["rejections"] = [{"file": r.file, "line": r.line, "reason": r.reason} for r in summary.rejections]
        emit_json(d)
        return
    for r in summary.rejections[:50]:
        typer.echo(f"rejected {r}", err=True)
    if len(summary.rejections) > 50:
        typer.echo(f"... and {len(summary.rejections) - 50} more rejections (see --json)", err=True)
    typer.echo(
        f"added {summary.added}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"rejected {summary.rejected}, removed {summary.removed} in {summary.seconds:.1f} s"
    )


def parse_where(items: list[str] | None) -> dict[str, Any] | None:
    """`KEY=VALUE` filters; integers and true/false become numbers and booleans."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--where wants KEY=VALUE, got {item!r}")
        out[key] = int(value) if value.lstrip("-").isdigit() else {"true": True, "false": False}.get(value, value)
    return out


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many hits.")] = 5,
    where: Annotated[list[str] | None, typer.Option(help="Metadata filter KEY=VALUE (repeatable).")] = None,
    mmr: Annotated[bool, typer.Option(help="Diversify hits with maximal marginal relevance.")] = False,
    min_score: Annotated[float | None, typer.Option(help="Drop hits below this cosine similarity.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Find the corpus records nearest to QUERY."""
    hits = assistant().search(query, k, where=parse_where(where), mmr=mmr, min_score=min_score)
    if as_json:
        emit_json([h.to_dict() for h in hits])
        return
    if not hits:
        typer.echo("no hits")
    for i, h in enumerate(hits, 1):
        cat = h.metadata.get("category", "")
        typer.echo(f"[{i}] {h.score:.3f} {cat} {h.id[:8]}\n    Q: {_clip(h.prompt)}\n    A: {_clip(h.response)}")


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False) -> None:
    """The store (embedded or server), its collections and counts, the embedding model, the backends."""
    info = assistant().status()
    if as_json:
        emit_json(info)
        return
    typer.echo(f"store: {info['store']}\nembedding model: {info['embedding_model']}")
    for c in info["collections"]:
        typer.echo(f"  {c['name']}: {c['count']} records ({c['embedding_model']}, dim {c['embedding_dim']})")
    if not info["collections"]:
        typer.echo("  no collections yet: run `shvayambhu ingest PATH`")
    for name, b in info.get("backends", {}).items():
        typer.echo(f"backend {name}: {'ready' if b['ready'] else 'not ready'} - {b['detail']}")


# ---------------------------------------------------------------------------------------------------------
# Asking, chatting, the self-model and memories

BACKENDS = ("auto", "ollama", "blt")
BACKEND_HELP = "ollama, blt or auto (the default: Ollama when its server answers, else BLT)."
BackendOpt = Annotated[str | None, typer.Option("--backend", help=BACKEND_HELP)]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Ollama model name (or BLT checkpoint).")]
SessionOpt = Annotated[str | None, typer.Option("--session", "-s", help="Memory session ('default').")]
HostOpt = Annotated[str | None, typer.Option("--ollama-host", help="Ollama URL [$OLLAMA_HOST or 127.0.0.1:11434].")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for the backend [300].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _ask_settings(
    backend: str | None,
    session: str | None,
    ollama_host: str | None,
    timeout: float | None,
    temperature: float | None = None,
    seed: int | None = None,
) -> Settings:
    if backend is not None and backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    ollama = {"host": ollama_host, "timeout": timeout, "temperature": temperature, "seed": seed}
    blt = {"temperature": temperature, "seed": seed}
    return settings(backend=backend, session=session, ollama=ollama, blt=blt)


def _warn(answer: Any) -> None:
    for w in answer.warnings:
        typer.echo(f"warning: {w}", err=True)


def _footer(answer: Any) -> str:
    lines = [
        f"  [{s.number}] {s.score:.2f} {'used ' if s.used else 'shown'} {_clip(s.prompt, 90)}" for s in answer.sources
    ]
    head = "sources:" if answer.sources else "sources: none (no exemplar in the prompt)"
    conf = f"confidence {answer.confidence:.2f}" + (
        " (low: little in the corpus or memory on this)" if answer.low_confidence else ""
    )
    total = answer.timings.get("total", 0.0)
    return "\n".join([head, *lines, f"{conf} · {answer.backend} {answer.model} · {total:.0f} ms"])


def _show_workspace(prompt: str, ws: Any) -> None:
    typer.echo("=== prompt " + "=" * 60)
    typer.echo(prompt)
    if ws is not None:
        typer.echo(f"=== workspace: {ws.used}/{ws.budget} {ws.unit} " + "=" * 40)
        for tag, items in (("won", ws.winners), ("lost", ws.losers)):
            for c in items:
                extra = " (truncated)" if c.truncated else (f" ({c.reason})" if c.reason else "")
                typer.echo(f"  {tag:4} {c.salience:.3f} {c.kind:10} {c.cost:>5} {_clip(c.text, 70)}{extra}")
    typer.echo("=== answer " + "=" * 60)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    backend: BackendOpt = None,
    model: ModelOpt = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Exemplars to retrieve [4].")] = None,
    session: SessionOpt = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated.")] = False,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Show prompt and workspace.")] = False,
    as_json: JsonOpt = False,
    ollama_host: HostOpt = None,
    timeout: TimeoutOpt = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    no_memory: Annotated[bool, typer.Option("--no-memory", help="Neither recall nor remember.")] = False,
    no_retrieval: Annotated[bool, typer.Option("--no-retrieval", help="Use no corpus exemplars.")] = False,
) -> None:
    """Answer QUESTION from the corpus and memory, with its sources and a confidence."""
    from rag.api import Shvayambhu

    a = Shvayambhu(_ask_settings(backend, session, ollama_host, timeout, temperature, seed))
    opts = dict(model=model, k=k, use_memory=not no_memory, use_retrieval=not no_retrieval, show_prompt=show_prompt)
    if stream and not as_json:
        s = a.stream(question, **opts)
        if show_prompt:
            from rag.prompting import flatten

            _show_workspace(flatten(s.prep.messages), s.prep.workspace)
        for piece in s:
            typer.echo(piece, nl=False)
        answer = s.answer
        typer.echo("\n")
    else:
        answer = a.ask(question, **opts)
        if as_json:
            emit_json(answer.to_dict(show_prompt=show_prompt))
            _warn(answer)
            return
        if show_prompt:
            _show_workspace(answer.prompt or "", answer.workspace)
        typer.echo(answer.answer + "\n")
    typer.echo(_footer(answer))
    _warn(answer)


CHAT_HELP = (
    "/sources  the last answer's sources\n/memory   recent memories\n/reset    forget this "
    "conversation's turns (memories stay)\n/exit     leave"
)


@app.command()
def chat(
    session: SessionOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Exemplars to retrieve [4].")] = None,
    ollama_host: HostOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Talk with streaming answers and memory across turns and runs (/sources /memory /reset /exit)."""
    from rag.api import Shvayambhu
    from rag.backends.base import BackendError

    a = Shvayambhu(_ask_settings(backend, session, ollama_host, timeout))
    be = a.backend(None, model)  # fails here, once, when no backend is reachable
    conv = a.chat(session, backend=be, k=k)
    name = a.self_model().name
    typer.echo(f"{name} ({be.name} {be.model}), session {conv.session!r}: /help lists commands, /exit leaves")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            typer.echo()
            break
        if not line:
            continue
        if line in ("/exit", "/quit", "/q"):
            break
        if line in ("/help", "/?"):
            typer.echo(CHAT_HELP)
            continue
        if line == "/reset":
            conv.reset()
            typer.echo("(conversation reset; memories kept - `shvayambhu memory clear` removes them)")
            continue
        if line == "/sources":
            if conv.last is None:
                typer.echo("(no answer yet)")
            for s in conv.last.sources if conv.last else []:
                mark = "used " if s.used else "shown"
                typer.echo(f"  [{s.number}] {s.score:.2f} {mark} {_clip(s.prompt, 90)}")
            if conv.last is not None:
                low = " (low)" if conv.last.low_confidence else ""
                typer.echo(f"  confidence {conv.last.confidence:.2f}{low}")
            continue
        if line == "/memory":
            mems = conv.memories(10)
            if not mems:
                typer.echo("(no memories yet)")
            for m in mems:
                typer.echo(f"  {m.id[:8]} {m.kind:10} {m.age():>15}  {_clip(m.text, 80)}")
            continue
        if line.startswith("/"):
            typer.echo(f"unknown command {line.split()[0]}; /help lists them")
            continue
        typer.echo(f"{name}> ", nl=False)
        try:
            for piece in conv.send(line):
                typer.echo(piece, nl=False)
            typer.echo()
        except BackendError as e:
            typer.echo(f"\nerror: {e}", err=True)


@app.command("self")
def self_cmd(as_json: JsonOpt = False) -> None:
    """The self-model (identity, values, style) that is in every prompt; edit [self_model] in the config."""
    from rag.config import config_path
    from rag.selfmodel import SelfModel

    sm = SelfModel.from_settings(settings().self_model)
    if as_json:
        emit_json(sm.to_dict())
        return
    typer.echo(sm.describe())
    from index.store import default_data_dir

    where = config_path(_state.get("config")) or default_data_dir() / "config.toml"
    typer.echo(f"\nedit it in the [self_model] table of {where} (or SHVAYAMBHU_SELF_MODEL_* variables)")


memory_app = typer.Typer(help="A session's memory stream: list, search, forget, clear.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")


def _memories(session: str | None) -> Any:
    from rag.api import Shvayambhu

    return Shvayambhu(settings(session=session)).memory()


def _print_memories(mems: list[Any], scored: bool = False) -> None:
    if not mems:
        typer.echo("no memories")
    for m in mems:
        score = (
            f" score {m.score:.2f} (rec {m.recency:.2f} imp {m.importance:.2f} rel {m.relevance:.2f})"
            if scored and m.score is not None
            else f" imp {m.importance:.2f}"
        )
        typer.echo(f"{m.id[:12]} {m.kind:10} {m.age():>15}{score}\n    {_clip(m.text, 150)}")


@memory_app.command("list")
def memory_list(
    session: SessionOpt = None,
    kind: Annotated[str | None, typer.Option(help="exchange, reflection or note.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the newest N.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every memory of the session, oldest first."""
    mems = _memories(session).list(kind=kind, limit=limit)
    if as_json:
        emit_json([m.to_dict() for m in mems])
    else:
        _print_memories(mems)


@memory_app.command("search")
def memory_search(
    query: Annotated[str, typer.Argument(help="What to recall.")],
    session: SessionOpt = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Memories ranked as recall ranks them: recency, importance and relevance."""
    mems = _memories(session).search(query, k=k)
    if as_json:
        emit_json([m.to_dict() for m in mems])
    else:
        _print_memories(mems, scored=True)


@memory_app.command("sessions")
def memory_sessions(as_json: JsonOpt = False) -> None:
    """The sessions that have memories in this store."""
    from rag.api import Shvayambhu
    from rag.memory import sessions

    names = sessions(Shvayambhu(settings()).client)
    if as_json:
        emit_json(names)
    else:
        typer.echo("\n".join(names) if names else "no sessions")


@memory_app.command("forget")
def memory_forget(
    ids: Annotated[list[str], typer.Argument(help="Memory ids or unique id prefixes (see `memory list`).")],
    session: SessionOpt = None,
) -> None:
    """Delete memories by id."""
    n = _memories(session).forget(ids)
    typer.echo(f"forgot {n} memor{'y' if n == 1 else 'ies'}")


@memory_app.command("clear")
def memory_clear(
    session: SessionOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every memory of the session."""
    mem = _memories(session)
    if not yes and not typer.confirm(f"delete all {mem.count()} memories of session {mem.session!r}?"):
        raise typer.Exit(1)
    n = mem.clear()
    typer.echo(f"cleared {n} memor{'y' if n == 1 else 'ies'} of session {mem.session!r}")


USER_ERRORS: tuple[type[BaseException], ...] = ()


@app.command()
def generate(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output JSONL (appended; rejections go to OUT.rejected.jsonl)."),
    ],
    models: Annotated[str, typer.Option(help="Comma-separated Ollama models; each prompt goes to each.")],
    prompts: Annotated[
        Path | None, typer.Option(help="JSONL with prompt (and category), or one prompt a line.")
    ] = None,
    shipped: Annotated[
        bool, typer.Option(help="Add the shipped topics x templates (default without --prompts).")
    ] = False,
    categories: Annotated[str | None, typer.Option(help="Keep only these categories (comma-separated).")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Sample this many prompts (reproducible with --seed).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed; also Ollama's seed when set.")] = None,
    per_prompt: Annotated[int | None, typer.Option(help="Ask only this many of --models per prompt.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling.")] = None,
    num_predict: Annotated[int | None, typer.Option(help="Maximum tokens per answer.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt for every request.")] = None,
    ollama_host: HostOpt = None,
    keep_alive: Annotated[str | None, typer.Option(help="How long Ollama keeps the model loaded.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight (1-100).")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds per request attempt.")] = 300.0,
    retries: Annotated[int, typer.Option(help="Retries on connection errors, 5xx and timeouts.")] = 4,
    fsync_interval: Annotated[float, typer.Option(help="Most seconds between fsyncs; 0 syncs every line.")] = 1.0,
    stream: Annotated[bool, typer.Option(help="Stream answers (costs client CPU).")] = False,
    ingest_after: Annotated[bool, typer.Option("--ingest", help="Ingest the output when the run ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Live progress bar.")] = True,
) -> None:
    """Generate a corpus through Ollama: validated, resumable, crash-safe; a rerun skips what is done."""
    from rag.generate import cli_generate

    raise typer.Exit(
        cli_generate(
            out,
            models,
            prompts,
            shipped,
            categories,
            n,
            seed,
            per_prompt,
            temperature,
            top_p,
            num_predict,
            system,
            ollama_host,
            keep_alive,
            concurrency,
            timeout,
            retries,
            fsync_interval,
            stream,
            ingest_after,
            as_json,
            progress,
            ingest_fn=lambda paths: assistant().ingest(paths),
        )
    )


def _command_line() -> str:
    return "shvayambhu " + " ".join(sys.argv[1:])


def _corpus_source(paths: list[Path] | None) -> dict[str, Any]:
    """Files when given, else the ingested corpus collection."""
    if paths:
        return {"sources": [str(p) for p in paths]}
    return {"collection": assistant().collection()}


@app.command()
def train(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Corpus files/folders [default: the ingested corpus collection].")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run folder: entropy/, blt/, baseline/ (each resumable).")] = Path(
        "runs/blt"
    ),
    stages: Annotated[str, typer.Option(help="Comma-separated: entropy, blt, baseline.")] = "entropy,blt,baseline",
    size: Annotated[str, typer.Option(help="tiny (tests), small (2-core CPU), base (GPU / Apple Silicon).")] = "small",
    max_minutes: Annotated[float | None, typer.Option(help="Wall-time budget for all stages.")] = 30.0,
    entropy_share: Annotated[float, typer.Option(help="Share of the time for the entropy model.")] = 0.2,
    max_steps: Annotated[int | None, typer.Option(help="Step budget per stage.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Retrieved exemplars per example.")] = 4,
    max_bytes: Annotated[int | None, typer.Option(help="Context length in bytes.")] = None,
    exemplar_bytes: Annotated[int | None, typer.Option(help="Keep at most this many bytes of each exemplar.")] = None,
    response_bytes: Annotated[
        int | None, typer.Option(help="Clip training responses to this many bytes (room for exemplars).")
    ] = None,
    copy_warmup: Annotated[
        float,
        typer.Option(
            help="Share of first-epoch examples whose top exemplar is their own response with words dropped "
            "(fades to 0 by the third epoch): teaches the model to copy from exemplars. 0 turns it off."
        ),
    ] = 0.5,
    dropout: Annotated[float, typer.Option(help="Dropout.")] = 0.1,
    eval_every: Annotated[int | None, typer.Option(help="Validate every N steps.")] = None,
    patience: Annotated[int | None, typer.Option(help="Validations without improvement before stopping.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for data order, augmentation and init.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue each stage from its last checkpoint.")] = True,
    export: Annotated[Path | None, typer.Option(help="Also write the best BLT here (for shipping).")] = None,
    export_dtype: Annotated[str, typer.Option(help="Weights dtype of the export: bfloat16, float16, float32.")] = (
        "bfloat16"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the stage summaries as JSON.")] = False,
) -> None:
    """Train the entropy model, then the BLT on its patches (and the equal-size byte-transformer baseline),
    conditioned on each record's retrieved neighbours; held-out records never train anything."""
    from rag.training import train_command

    command = _command_line()
    try:
        results = train_command(
            out_dir=out,
            stages=[s.strip() for s in stages.split(",") if s.strip()],
            size=size,
            max_minutes=max_minutes,
            entropy_share=entropy_share,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            k=k,
            max_bytes=max_bytes,
            exemplar_bytes=exemplar_bytes,
            dropout=dropout,
            eval_every=eval_every,
            patience=patience,
            seed=seed,
            resume=resume,
            progress=sys.stderr.isatty(),
            command=command,
            response_bytes=response_bytes,
            copy_warmup=copy_warmup,
            **_corpus_source(paths),
        )
    except ValueError as e:  # unknown stage or size, a corpus too small to split
        fail(str(e), 2)
    if export is not None:
        from blt.checkpoint import export_checkpoint

        dtype = None if export_dtype == "float32" else export_dtype
        export_checkpoint(out / "blt" / "best", export, dtype=dtype, metrics={"command": command})
        results["export"] = str(export)
    if as_json:
        emit_json(results)
        return
    for stage in ("entropy", "blt", "baseline"):
        r = results.get(stage)
        if isinstance(r, dict):
            shown = {k: v for k, v in r.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}
            typer.echo(
                f"{stage}: "
                + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
            )
    if export is not None:
        typer.echo(f"exported the best BLT to {export} ({export_dtype})")


eval_app = typer.Typer(help="Evaluation: bits-per-byte, retrieval, generation.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("bpb")
def eval_bpb(
    checkpoint: Annotated[Path, typer.Argument(help="BLT checkpoint, its stage folder, or a `train` run folder.")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Corpus files [default: the ingested corpus collection].")
    ] = None,
    baseline: Annotated[Path | None, typer.Option(help="Baseline checkpoint [the run folder's baseline/].")] = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Exemplars [as trained].")] = None,
    compressors: Annotated[bool, typer.Option(help="Include gzip -9, bzip2 -9, xz -9.")] = True,
    max_records: Annotated[int | None, typer.Option(help="Score at most this many held-out records.")] = None,
    response_bytes: Annotated[
        int | None, typer.Option(help="Score the first N bytes of each response [as the BLT was trained].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Bits-per-byte of the held-out responses: BLT with and without retrieval, the baseline, compressors."""
    from rag.training import eval_bpb_command

    try:
        report = eval_bpb_command(
            checkpoint=checkpoint,
            baseline=baseline,
            k=k,
            compressors=compressors,
            max_records=max_records,
            response_bytes=response_bytes,
            **_corpus_source(paths),
        )
    except ValueError as e:  # no held-out records, a baseline checkpoint given as the BLT
        fail(str(e), 2)
    if as_json:
        emit_json({k: v for k, v in report.items() if k != "markdown"})
    else:
        typer.echo(report.get("markdown", ""))


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[
        Path | None, typer.Argument(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) [the held-out split].")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split of a BEIR dataset.")] = "test",
    corpus: Annotated[list[Path] | None, typer.Option(help="Corpus files for the held-out split [bundled].")] = None,
    embed: Annotated[str | None, typer.Option(help="title_text (BEIR default), title or text.")] = None,
    k: Annotated[str, typer.Option("-k", "--k", help="Cut-offs, comma-separated.")] = "1,3,5,10,100",
    mmr: Annotated[bool, typer.Option(help="Rerank with MMR.")] = False,
    mmr_lambda: Annotated[float, typer.Option(help="MMR relevance weight.")] = 0.5,
    fetch_k: Annotated[int, typer.Option(help="MMR candidates.")] = 20,
    exact: Annotated[bool, typer.Option(help="Brute-force search (MTEB's method) instead of Chroma's HNSW.")] = False,
    ignore_identical_ids: Annotated[bool, typer.Option(help="Drop a document whose id is the query's.")] = False,
    strict: Annotated[bool, typer.Option(help="Unknown ids in qrels are errors.")] = False,
    run_file: Annotated[Path | None, typer.Option(help="Also write a TREC run file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Retrieval quality (nDCG, MRR, recall, precision, MAP, hit rate) in a throwaway collection."""
    from rag.eval import BeirError
    from rag.eval.report import render_retrieval
    from rag.eval.retrieval import retrieval_command

    st = settings()
    try:
        report = retrieval_command(
            dataset,
            split=split,
            corpus=corpus,
            model=st.embedding.model,
            embed=embed,
            k=k,
            mmr=mmr,
            mmr_lambda=mmr_lambda,
            fetch_k=fetch_k,
            exact=exact,
            ignore_identical_ids=ignore_identical_ids,
            strict=strict,
            run_file=run_file,
            progress=sys.stderr.isatty(),
        )
    except (BeirError, ValueError) as e:
        fail(str(e), 2)
    typer.echo(json.dumps(report.to_json()) if as_json else render_retrieval(report))


@eval_app.command("generation")
def eval_generation(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Prompts with reference responses [the corpus's held-out split].")
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(help="NAME=OPTIONS (repeatable), e.g. rag=backend=blt,k=4,retrieval=on,memory=off."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder [eval-results/...]; rerunning resumes.")] = None,
    split: Annotated[str | None, typer.Option(help="Keep only records with this split.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many prompts.")] = None,
    judge: Annotated[str | None, typer.Option(help="Ollama model that judges faithfulness and relevance.")] = None,
    judge_host: Annotated[str | None, typer.Option(help="Ollama host of the judge.")] = None,
    judge_timeout: Annotated[float, typer.Option(help="Seconds per judge call.")] = 60.0,
    judge_retries: Annotated[int, typer.Option(help="Retries of a bad judge answer.")] = 2,
    fresh: Annotated[bool, typer.Option(help="Discard earlier results in the folder.")] = False,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals.")] = 1000,
) -> None:
    """Answer prompts under each configuration; chrF, ROUGE-L, similarity, confidence, latency; a report."""
    from rag.eval import GenerationError
    from rag.eval.generation import generation_command

    try:
        run = generation_command(
            inputs,
            configs=config or ["default=backend=auto"],
            out=out,
            split=split,
            limit=limit,
            judge_model=judge,
            judge_host=judge_host,
            judge_timeout=judge_timeout,
            judge_retries=judge_retries,
            fresh=fresh,
            progress=sys.stderr.isatty(),
            plots=plots,
            bootstrap=bootstrap,
            settings=settings(),
        )
    except GenerationError as e:
        fail(str(e), 2)
    typer.echo(f"answered {run.answered}, skipped {run.skipped}, errors {run.errors}: {run.folder / 'report.md'}")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: shown as one line, never as a traceback."""
    from index.embed import EmbeddingError
    from index.store import StoreError
    from ingest.pipeline import IngestError
    from ingest.readers import ReadError
    from rag.backends.base import BackendError
    from rag.config import ConfigError

    errors: list[type[BaseException]] = [
        EmbeddingError,
        StoreError,
        IngestError,
        ReadError,
        BackendError,
        ConfigError,
        FileNotFoundError,
    ]
    try:
        from blt.checkpoint import CheckpointError

        errors.append(CheckpointError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    from blt.blas import enable_openblas

    enable_openblas(verbose=False)  # before anything imports mlx; `status` says which BLAS is in use
    errors = _user_errors()
    try:
        app(args=argv, prog_name="shvayambhu", standalone_mode=True)
    except errors as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
