"""Store care: `doctor` (find and repair lost vectors, migrate old sources), `backup` and `restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from index.errors import UsageError
from rag.cli.common import assistant, settings


def _embedded_only(what: str) -> Path:
    st = settings()
    if st.store.chroma_host:
        raise UsageError(f"{what} works on the embedded store: for a Chroma server, {what} the server's --path folder")
    return st.data_dir


def doctor(
    repair: Annotated[bool, typer.Option("--repair", help="Re-embed records whose vector cannot be read.")] = False,
    migrate_sources: Annotated[
        Path | None,
        typer.Option(
            help="Rewrite relative sources stored by an older version as absolute paths under this folder "
            "(the folder they were ingested from)."
        ),
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Fail at once when another process writes.")] = False,
) -> None:
    """Check the corpus for records without a readable vector; repair them or migrate old relative sources."""
    from index.lock import store_write_lock  # lazy: chromadb loads only for store commands
    from ingest.sources import migrate_sources as migrate

    a = assistant()
    if migrate_sources is not None:
        col = a.collection()
        with store_write_lock(col, "migrate", wait=not no_wait):
            n = migrate(col, migrate_sources)
        typer.echo(f"migrated the sources of {n} record(s) to absolute paths under {migrate_sources.resolve()}")
    lost = a.check()
    if not lost:
        typer.echo("every record has a readable vector")
        return
    if not repair:
        typer.echo(f"{len(lost)} record(s) have no readable vector: run `shvayambhu doctor --repair`", err=True)
        raise typer.Exit(1)
    typer.echo(f"re-embedded {a.repair(wait=not no_wait)} record(s) from their stored text")


def backup(dest: Annotated[Path, typer.Argument(help="An empty or new folder for the copy.")]) -> None:
    """A consistent copy of the store, taken under the write lock while searches and asks keep working."""
    from index.backup import backup as copy  # lazy: chromadb loads only for store commands

    typer.echo(f"backed up {_embedded_only('backup')} to {copy(_embedded_only('backup'), dest)}")


def restore(
    src: Annotated[Path, typer.Argument(help="A folder made by `shvayambhu backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a store that holds data (kept aside until done).")
    ] = False,
) -> None:
    """Put a backup in place of the store; a store with data is replaced only with --force. Refused while another
    process (a running `serve` or `chat`) has the store open: stop it first."""
    from index.backup import restore as put  # lazy: chromadb loads only for store commands

    data_dir = _embedded_only("restore")
    put(src, data_dir, force=force)
    typer.echo(f"restored {src} into {data_dir}")
