"""Corpus commands: ingest, search, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rag.cli.common import assistant, clip, emit_json


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


def search(
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
        typer.echo(f"[{i}] {h.score:.3f} {cat} {h.id[:8]}\n    Q: {clip(h.prompt)}\n    A: {clip(h.response)}")


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
