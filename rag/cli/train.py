"""`shvayambhu train`: the entropy model, the BLT and its baseline on the corpus."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rag.cli.common import corpus_source, emit_json


def _command_line() -> str:
    return "shvayambhu " + " ".join(sys.argv[1:])


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
    teacher: Annotated[
        Path | None,
        typer.Option(help="Teacher answers (`shvayambhu distill`) to learn in place of the responses (distillation)."),
    ] = None,
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
    from training.commands import TrainRunConfig, train_command  # lazy: the body loads only when it runs

    command = _command_line()
    cfg = TrainRunConfig(
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
        teacher=teacher,
    )
    results = train_command(cfg, **corpus_source(paths))
    if export is not None:
        from blt.checkpoint import export_checkpoint  # lazy: loads mlx

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
