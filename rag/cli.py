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
        "Store options go before the command: `shvayambhu --data-dir DIR search \"...\"`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (embedded Chroma, memories) [$SHVAYAMBHU_HOME].")] = None,
    chroma_host: Annotated[str | None, typer.Option(help="Use a `chroma run` server at this host.")] = None,
    chroma_port: Annotated[int | None, typer.Option(help="Port of the Chroma server.")] = None,
    collection: Annotated[str | None, typer.Option(help="Corpus collection name [corpus].")] = None,
    embedding_model: Annotated[
        str | None, typer.Option(help="sentence-transformers model name or path [all-MiniLM-L6-v2, packaged].")
    ] = None,
    embed: Annotated[str | None, typer.Option(help="What is embedded for a pair: prompt, response or both.")] = None,
) -> None:
    _state["config"] = config
    _state["overrides"] = {
        "store": {
            k: v
            for k, v in {"data_dir": str(data_dir) if data_dir else None, "chroma_host": chroma_host,
                         "chroma_port": chroma_port, "collection": collection}.items()
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


USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: shown as one line, never as a traceback."""
    from index.embed import EmbeddingError
    from index.store import StoreError
    from ingest.pipeline import IngestError
    from ingest.readers import ReadError
    from rag.backends.base import BackendError
    from rag.config import ConfigError

    errors: list[type[BaseException]] = [EmbeddingError, StoreError, IngestError, ReadError, BackendError,
                                         ConfigError, FileNotFoundError]
    try:
        from blt.checkpoint import CheckpointError

        errors.append(CheckpointError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
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
