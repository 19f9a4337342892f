"""Corpus commands: ingest, search, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from index.errors import ShvayambhuError
from rag.cli.common import ModeOpt, assistant, clip, emit_json, found_by, settings
from rag.cli.remote import NoServerOpt, connect


def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="JSONL/JSON, .txt/.md, PDF/DOCX/PPTX/HTML/EPUB files or folders (recursive)."),
    ],
    prune: Annotated[bool, typer.Option(help="Remove records of these sources that are no longer in them.")] = False,
    strict: Annotated[bool, typer.Option(help="Any rejected record is fatal and nothing is written.")] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Fail at once, instead of waiting, when another process writes the store.")
    ] = False,
    verify: Annotated[bool, typer.Option(help="Also re-embed stored records whose vector cannot be read.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Validate, embed and store a corpus; re-running adds nothing new, edits replace old versions.

    One writer at a time: a second ingest (or memory write) waits for the first and says so."""
    try:
        summary = assistant().ingest(paths, prune=prune, strict=strict, wait=not no_wait, verify=verify)
    except ShvayambhuError as e:
        if as_json and getattr(e, "summary", None) is not None:  # --strict --json: rejections as JSON, no writes
            emit_json({"error": str(e).splitlines()[0], **e.summary.to_dict()})
            raise typer.Exit(e.exit_code) from None
        raise
    if as_json:
        emit_json(summary.to_dict())
        return
    for w in summary.warnings:
        typer.echo(f"warning: {w}", err=True)
    for r in summary.rejections[:50]:
        typer.echo(f"rejected {r}", err=True)
    if len(summary.rejections) > 50:
        typer.echo(f"... and {len(summary.rejections) - 50} more rejections (see --json)", err=True)
    repaired = f", repaired {summary.repaired}" if summary.repaired else ""
    typer.echo(
        f"added {summary.added}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"rejected {summary.rejected}, removed {summary.removed}{repaired} in {summary.seconds:.1f} s"
    )
    if summary.skipped:
        typer.echo(summary.skipped_line())


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


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many hits.")] = 5,
    where: Annotated[list[str] | None, typer.Option(help="Metadata filter KEY=VALUE (repeatable).")] = None,
    mmr: Annotated[bool, typer.Option(help="Diversify hits with maximal marginal relevance.")] = False,
    min_score: Annotated[float | None, typer.Option(help="Drop hits below this cosine similarity.")] = None,
    mode: ModeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    no_server: NoServerOpt = False,
) -> None:
    """Find the corpus records nearest to QUERY."""
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    hits = (connect(settings(), no_server) or assistant()).search(
        query, k, where=parse_where(where), mmr=mmr, min_score=min_score, mode=mode
    )
    if as_json:
        emit_json([h.to_dict() for h in hits])
        return
    if not hits:
        typer.echo("no hits")
    from rag.answer import Source, place  # lazy: rag.answer loads the store (chromadb)

    for i, h in enumerate(hits, 1):
        cat = h.metadata.get("category", "")
        src = Source.place_fields(h.metadata)
        where = place(src["file"], src["heading"], src["page"])
        typer.echo(
            f"[{i}] {h.score:.3f} {cat} {h.id[:8]}{found_by(h)}\n    in: {where}\n"
            f"    Q: {clip(h.prompt)}\n    A: {clip(h.response)}"
        )


def status(
    check: Annotated[bool, typer.Option("--check", help="Also look for records without a readable vector.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """The store (embedded or server), its collections and counts, the embedding model, the backends."""
    a = assistant()
    info = a.status()
    if check:
        info["unreadable_vectors"] = a.check()
    if as_json:
        emit_json(info)
        return
    typer.echo(f"store: {info['store']}\nembedding model: {info['embedding_model']}")
    for c in info["collections"]:
        precision = f", {c['embedding_precision']}" if c.get("embedding_precision") else ""
        n, model = c["count"], c["embedding_model"]
        typer.echo(f"  {c['name']}: {n} record{'' if n == 1 else 's'} ({model}, dim {c['embedding_dim']}{precision})")
    if not info["collections"]:
        typer.echo("  no collections yet: run `shvayambhu ingest PATH`")
    for name, b in info.get("backends", {}).items():
        typer.echo(f"backend {name}: {'ready' if b['ready'] else 'not ready'} - {b['detail']}")
    lost = info.get("unreadable_vectors")
    if lost:
        typer.echo(f"{len(lost)} record(s) have no readable vector: run `shvayambhu doctor --repair`", err=True)
        raise typer.Exit(1)
    if check:
        typer.echo("check: every record has a readable vector")
