"""`shvayambhu memory`: a session's memory stream (list, search, sessions, forget, clear)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rag.cli.common import JsonOpt, SessionOpt, clip, emit_json, settings


def _memories(session: str | None) -> Any:
    from rag.api import Shvayambhu  # lazy: loads chromadb

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
        typer.echo(f"{m.id[:12]} {m.kind:10} {m.age():>15}{score}\n    {clip(m.text, 150)}")


def list_memories(
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


def search_memories(
    query: Annotated[str, typer.Argument(help="What to recall.")],
    session: SessionOpt = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Memories ranked as recall ranks them: recency, importance and relevance."""
    mems = _memories(session).search(query, k=k)
    if as_json:
        emit_json([m.to_dict() for m in mems])
    else:
        _print_memories(mems, scored=True)


def sessions(as_json: JsonOpt = False) -> None:
    """The sessions that have memories in this store."""
    from rag.api import Shvayambhu  # lazy: loads chromadb
    from rag.consciousness.memory import sessions  # lazy: loads chromadb

    names = sessions(Shvayambhu(settings()).client)
    if as_json:
        emit_json(names)
    else:
        typer.echo("\n".join(names) if names else "no sessions")


def forget(
    ids: Annotated[list[str], typer.Argument(help="Memory ids or unique id prefixes (see `memory list`).")],
    session: SessionOpt = None,
) -> None:
    """Delete memories by id."""
    n = _memories(session).forget(ids)
    typer.echo(f"forgot {n} memor{'y' if n == 1 else 'ies'}")


def clear(
    session: SessionOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every memory of the session."""
    mem = _memories(session)
    if not yes and not typer.confirm(f"delete all {mem.count()} memories of session {mem.session!r}?"):
        raise typer.Exit(1)
    n = mem.clear()
    typer.echo(f"cleared {n} memor{'y' if n == 1 else 'ies'} of session {mem.session!r}")
