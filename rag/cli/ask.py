"""Asking and talking: ask, chat, and the self-model that is in every prompt."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rag.backends.base import BackendError
from rag.cli.common import (
    BACKENDS,
    BackendOpt,
    HostOpt,
    JsonOpt,
    ModelOpt,
    ModeOpt,
    SessionOpt,
    TimeoutOpt,
    _state,
    answering_assistant,
    clip,
    emit_json,
    found_by,
    settings,
)
from rag.cli.remote import NoServerOpt, connect
from rag.config import Settings, config_path, default_data_dir
from rag.consciousness.prompt import flatten
from rag.consciousness.selfmodel import SelfModel


def _ask_settings(
    backend: str | None,
    session: str | None,
    ollama_host: str | None,
    timeout: float | None,
    temperature: float | None = None,
    seed: int | None = None,
    mode: str | None = None,
) -> Settings:
    if backend is not None and backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    ollama = {"host": ollama_host, "timeout": timeout, "temperature": temperature, "seed": seed}
    sampling = {"temperature": temperature, "seed": seed}
    return settings(
        backend=backend, session=session, ollama=ollama, blt=sampling, mlx=sampling, retrieval={"mode": mode}
    )


AskSessionOpt = Annotated[
    str | None,
    typer.Option("--session", "-s", help="Memory session to recall from and remember in; without it, nothing is."),
]


def _conversation_name() -> str:
    """A new session for one `chat` run: `chat-<UTC date and time>-<4 hex>`."""
    import secrets
    import time

    return time.strftime("chat-%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def _warn(answer: Any) -> None:
    for w in answer.warnings:
        typer.echo(f"warning: {w}", err=True)


def _source_line(s: Any) -> str:
    """One source: its number, score, whether the answer used it, where it is (file, page, heading) and its text."""
    where = f"{clip(s.where, 70)} - " if s.where else ""
    text = s.response if s.start is not None and s.response else s.prompt  # a passage's prompt repeats its place
    if s.quote:  # an extractive answer's sentence, whole: what the user checks the answer against
        return f"  [{s.number}] {s.score:.2f} quoted {where}\u201c{s.quote}\u201d"
    return f"  [{s.number}] {s.score:.2f} {'used ' if s.used else 'shown'} {where}{clip(text, 90)}"


def _footer(answer: Any) -> str:
    lines = [_source_line(s) for s in answer.sources]
    head = "sources:" if answer.sources else "sources: none (no exemplar in the prompt)"
    why = getattr(answer.details, "reason", "") or "little in the corpus on this"  # a server's record: a Record
    conf = f"confidence {answer.confidence:.2f}" + (f" (low: {why})" if answer.low_confidence else "")
    total = answer.timings.get("total", 0.0)
    grounded = "grounded in a source" if answer.grounded else "not grounded (no source holds this answer)"
    return "\n".join([head, *lines, f"{conf} · {grounded} · {answer.backend} {answer.model} · {total:.0f} ms"])


def _show_workspace(prompt: str, ws: Any) -> None:
    typer.echo("=== prompt " + "=" * 60)
    typer.echo(prompt)
    if ws is not None:
        typer.echo(f"=== workspace: {ws.used}/{ws.budget} {ws.unit} " + "=" * 40)
        for tag, items in (("won", ws.winners), ("lost", ws.losers)):
            for c in items:
                extra = " (truncated)" if c.truncated else (f" ({c.reason})" if c.reason else "")
                how = found_by(c.meta["hit"]) if "hit" in c.meta else ""
                typer.echo(f"  {tag:4} {c.salience:.3f} {c.kind:10} {c.cost:>5} {clip(c.text, 70)}{extra}{how}")
    typer.echo("=== answer " + "=" * 60)


def ask(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    backend: BackendOpt = None,
    model: ModelOpt = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Exemplars to retrieve [4].")] = None,
    session: AskSessionOpt = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated.")] = False,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Show prompt and workspace.")] = False,
    as_json: JsonOpt = False,
    ollama_host: HostOpt = None,
    timeout: TimeoutOpt = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    no_memory: Annotated[bool, typer.Option("--no-memory", help="Neither recall nor remember.")] = False,
    no_retrieval: Annotated[bool, typer.Option("--no-retrieval", help="Use no corpus exemplars.")] = False,
    mode: ModeOpt = None,
    no_server: NoServerOpt = False,
) -> None:
    """Answer QUESTION from the corpus (and, with --session, that session's memory), with its sources and a
    confidence. Without --session nothing is recalled or remembered."""
    st = _ask_settings(backend, session, ollama_host, timeout, temperature, seed, mode)
    a = connect(st, no_server or (show_prompt and not as_json)) or answering_assistant(st, model)  # `serve`: warm
    remember = session is not None and not no_memory
    if remember:
        typer.echo(f"session: {session} (recalled from and remembered in)", err=True)
    opts = dict(model=model, k=k, use_memory=remember, use_retrieval=not no_retrieval, show_prompt=show_prompt)
    if stream and not as_json:
        s = a.stream(question, **opts)
        if show_prompt:
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


def chat(
    session: SessionOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Exemplars to retrieve [4].")] = None,
    ollama_host: HostOpt = None,
    timeout: TimeoutOpt = None,
    no_server: NoServerOpt = False,
) -> None:
    """Talk with streaming answers and memory across turns (/sources /memory /reset /exit). Each run is a new
    session unless --session names one to go on with."""
    session = session or _conversation_name()
    st = _ask_settings(backend, session, ollama_host, timeout)
    a = connect(st, no_server) or answering_assistant(st, model)  # a running `serve` answers with a warm model
    be = a.backend(None, model)  # fails here, once, when no backend is reachable
    conv = a.chat(session, backend=be, k=k)
    name = a.self_model().name
    typer.echo(
        f"{name} ({be.name} {be.model}), session {conv.session!r} (go on later with --session {conv.session}): "
        "/help lists commands, /exit leaves"
    )
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
                typer.echo(_source_line(s))
            if conv.last is not None:
                low = " (low)" if conv.last.low_confidence else ""
                typer.echo(f"  confidence {conv.last.confidence:.2f}{low}")
            continue
        if line == "/memory":
            mems = conv.memories(10)
            if not mems:
                typer.echo("(no memories yet)")
            for m in mems:
                typer.echo(f"  {m.id[:8]} {m.kind:10} {m.age():>15}  {clip(m.text, 80)}")
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


def self_model(as_json: JsonOpt = False) -> None:
    """The self-model (identity, values, style) that is in every prompt; edit [self_model] in the config."""

    sm = SelfModel.from_settings(settings().self_model)
    if as_json:
        emit_json(sm.to_dict())
        return
    typer.echo(sm.describe())
    where = config_path(_state.get("config")) or default_data_dir() / "config.toml"
    typer.echo(f"\nedit it in the [self_model] table of {where} (or SHVAYAMBHU_SELF_MODEL_* variables)")
