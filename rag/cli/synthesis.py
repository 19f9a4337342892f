"""`shvayambhu generate`: corpus synthesis through a chat backend."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rag.cli.common import assistant, emit_json


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
    ollama_host: Annotated[
        str | None,
        typer.Option(
            "--ollama-host",
            help="Ollama URL, or several comma-separated: jobs are spread over them, --concurrency each "
            "[$OLLAMA_HOST or 127.0.0.1:11434].",
        ),
    ] = None,
    keep_alive: Annotated[str | None, typer.Option(help="How long Ollama keeps the model loaded.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight per host (1-100).")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds per request attempt.")] = 300.0,
    retries: Annotated[int, typer.Option(help="Retries on connection errors, 5xx and timeouts.")] = 4,
    fsync_interval: Annotated[float, typer.Option(help="Most seconds between fsyncs; 0 syncs every line.")] = 1.0,
    stream: Annotated[bool, typer.Option(help="Stream answers (costs client CPU).")] = False,
    ingest_after: Annotated[bool, typer.Option("--ingest", help="Ingest the output when the run ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Live progress bar.")] = True,
) -> None:
    """Synthesise a corpus through Ollama: validated, resumable, crash-safe; a rerun skips what is done.

    Exit codes: 0 all done, 1 some pairs failed or a model is missing (rerun to retry), 2 bad arguments."""
    from rag.synthesis import SynthesisConfig, SynthesisError, format_summary, synthesize  # lazy: asyncio, ollama

    cfg = SynthesisConfig(
        out=Path(out),
        models=[m for m in models.split(",") if m.strip()],
        prompts=prompts,
        shipped=shipped,
        categories=[c.strip() for c in categories.split(",") if c.strip()] if categories else None,
        n=n,
        seed=seed,
        per_prompt=per_prompt,
        temperature=temperature,
        top_p=top_p,
        num_predict=num_predict,
        system=system,
        host=ollama_host,
        keep_alive=keep_alive,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
        fsync_interval=fsync_interval,
        stream=stream,
        ingest=ingest_after,
        progress=progress and not as_json and sys.stderr.isatty(),
    )
    try:
        summary = synthesize(cfg, ingest_fn=lambda paths: assistant().ingest(paths))
    except SynthesisError as exc:
        if not as_json:
            raise
        emit_json({"error": str(exc)})
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: what was written to {cfg.out} is whole; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(json.dumps(summary.to_json(), ensure_ascii=False, indent=2) if as_json else format_summary(summary))
    raise typer.Exit(1 if summary.failed else 0)  # 1: some pairs failed or a model is not pulled; rerun to retry
