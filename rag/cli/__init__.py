"""The `shvayambhu` command line: a thin layer over `rag.api.Shvayambhu`.

One module per command group (`corpus`, `store`, `ask`, `memory`, `synthesis`, `train`, `finetune`, `distill`, `eval`,
`serve`); this module is the command table, and `errors` is the one place that maps errors to messages and exit codes.
"""

from __future__ import annotations

import sys

import typer

from blt.blas import enable_openblas
from rag.cli import ask, common, corpus, distill, eval, finetune, memory, serve, store, synthesis, train
from rag.cli.errors import EXIT_INTERRUPTED, report

app = typer.Typer(
    name="shvayambhu",
    help=(
        "A local retrieval-augmented assistant with memory, calibrated confidence and its own byte-level model.\n\n"
        "Settings come from defaults, then a TOML file (--config, $SHVAYAMBHU_CONFIG or ~/.shvayambhu/config.toml), "
        "then SHVAYAMBHU_* environment variables (e.g. SHVAYAMBHU_HOME, SHVAYAMBHU_OLLAMA_MODEL), then flags. "
        'Store options go before the command: `shvayambhu --data-dir DIR search "..."`.\n\n'
        "Exit codes: 0 success, 1 data or user error, 2 usage error, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.callback()(common.global_options)

app.command()(corpus.ingest)
app.command("search")(corpus.search)
app.command()(corpus.status)
app.command()(store.doctor)
app.command()(store.backup)
app.command()(store.restore)
app.command()(ask.ask)
app.command()(ask.chat)
app.command("self")(ask.self_model)
app.command()(synthesis.generate)
app.command()(train.train)
app.command()(finetune.finetune)
app.command()(distill.distill)
app.command()(serve.serve)

memory_app = typer.Typer(help="A session's memory stream: list, search, forget, clear.", no_args_is_help=True)
memory_app.command("list")(memory.list_memories)
memory_app.command("search")(memory.search_memories)
memory_app.command("sessions")(memory.sessions)
memory_app.command("forget")(memory.forget)
memory_app.command("clear")(memory.clear)
app.add_typer(memory_app, name="memory")

eval_app = typer.Typer(help="Evaluation: bits-per-byte, retrieval, generation, answers.", no_args_is_help=True)
eval_app.command("bpb")(eval.bpb)
eval_app.command("retrieval")(eval.retrieval)
eval_app.command("generation")(eval.generation)
eval_app.command("answers")(eval.answers)
app.add_typer(eval_app, name="eval")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: OpenBLAS under MLX first, then the command; user errors are one line."""

    enable_openblas(verbose=False)  # before anything imports mlx; `status` says which BLAS is in use
    try:
        app(args=argv, prog_name="shvayambhu", standalone_mode=True)  # click prints usage errors, exit 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - `report` re-raises what is not the user's to fix
        sys.exit(report(e))
