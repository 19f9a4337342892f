"""`shvayambhu distill`: the MLX model's answers to the corpus's prompts through this layer, the targets of
`shvayambhu train --teacher` (sequence-level distillation of the BLT, training.distill)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rag.cli.common import assistant, emit_json
from rag.config import on_fresh_store

REFUSALS = ("I could not find",)  # the layer's "not found" words: such an answer teaches the BLT nothing


def distill(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Corpus files/folders [default: the bundled seed corpus].")
    ] = None,
    out: Annotated[Path, typer.Option(help="The teacher's answers (JSONL) to write.")] = Path("runs/teacher.jsonl"),
    folds: Annotated[
        int, typer.Option(min=2, help="Each fold is answered from a store of the others (never its own record).")
    ] = 2,
    max_tokens: Annotated[int, typer.Option(min=1, help="Longest teacher answer (tokens).")] = 64,
    batch: Annotated[int, typer.Option(min=1, max=64, help="Prompts the teacher decodes together.")] = 16,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Ask at most N prompts, a stable sample of the whole (a shorter run).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Ask the MLX model (with `[mlx] adapter` when set) every non-held-out record's prompt through the layer,
    with retrieval over a store of the other folds, and write its answers (refusals left out). Train the BLT on
    them with `shvayambhu train CORPUS --teacher OUT`. Resumable: the answers so far are kept in
    OUT.work/answers.jsonl."""
    from ingest.bundled import seed_corpus
    from training.data import records_from_files
    from training.distill import (
        ask_all,
        fold_of,
        read_answers,
        sample,
        to_teach,
        trainable,
        write_answers,
        write_corpus,
    )

    corpus = records_from_files(paths or seed_corpus())
    records = trainable(corpus)  # held-out ones are never asked and never shown
    prompts = sample(to_teach(corpus), limit) if limit else to_teach(corpus)
    work = out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "answers.jsonl"
    answers = read_answers(saved)
    resumed = len(answers)
    chosen = set(prompts)
    settings = assistant().settings
    for f in range(folds):
        mine = [p for p in prompts if fold_of(p, folds) == f and p not in answers]
        if not mine:
            continue
        others = [r for r in records if r.prompt not in chosen or fold_of(r.prompt, folds) != f]
        docs = work / f"store-{f}.jsonl"
        write_corpus(docs, others)
        teacher = _teacher(settings, work / f"store-{f}", docs, max_tokens)
        save = _saver(saved, f"fold {f + 1}/{folds}", len(mine))
        answers = ask_all(mine, teacher, batch=batch, done=answers, on_batch=save)
    said = {p: answers[p] for p in prompts if p in answers}
    usable = {p: a for p, a in said.items() if a and not a.startswith(REFUSALS)}
    write_answers(out, usable)
    info = {
        "records_not_held_out": len(records),
        "asked": len(prompts),
        "answers": len(usable),
        "refused_or_empty": len(said) - len(usable),
        "resumed": resumed,
        "folds": folds,
        "max_tokens": max_tokens,
    }
    (work / "info.json").write_text(json.dumps({**info, "out": str(out)}, indent=2))
    if as_json:
        emit_json(info)
        return
    typer.echo(
        f"{len(usable)} teacher answers for {len(prompts)} prompts ({info['refused_or_empty']} refused or empty, "
        f"held-out records never asked); wrote {out}. Train the BLT on them: shvayambhu train CORPUS --teacher {out}"
    )


def _teacher(settings: Any, folder: Path, docs: Path, max_tokens: int) -> Any:
    """prompts -> the MLX model's answers through the layer, over a store in `folder` holding exactly `docs`."""
    from rag.api import Shvayambhu
    from rag.cli.finetune_anchors import base_generate

    s = on_fresh_store(settings, folder, "distill")
    s.memory.enabled = False
    a = Shvayambhu(s)
    a.ingest([docs], prune=True, progress=False)  # the store is this fold's file, whatever a run before left
    backend = a.backend("mlx")
    generate = base_generate(backend, max_tokens)

    def teacher(chunk: list[str]) -> list[str]:
        return generate([a.prepare(p, backend=backend, use_memory=False).messages for p in chunk])

    return teacher


def _saver(saved: Path, label: str, total: int) -> Any:
    """on_batch for `ask_all`: append the batch's answers to `saved` and say how far it is."""
    from training.distill import append_answers

    done = 0

    def save(new: dict[str, str]) -> None:
        nonlocal done
        append_answers(saved, new)
        done += len(new)
        sys.stderr.write(f"{label}: {done}/{total} answered\n")
        sys.stderr.flush()

    return save
