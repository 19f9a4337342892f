"""`shvayambhu eval`: bits-per-byte, retrieval, generation quality and answers end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rag.cli.common import assistant, corpus_source, emit_json, settings
from rag.cli.extras import require_extra


def bpb(
    checkpoint: Annotated[Path, typer.Argument(help="BLT checkpoint, its stage folder, or a `train` run folder.")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Corpus files [default: the ingested corpus collection].")
    ] = None,
    baseline: Annotated[Path | None, typer.Option(help="Baseline checkpoint [the run folder's baseline/].")] = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Exemplars [as trained].")] = None,
    compressors: Annotated[bool, typer.Option(help="Include gzip -9, bzip2 -9, xz -9.")] = True,
    max_records: Annotated[int | None, typer.Option(help="Score at most this many held-out records.")] = None,
    response_bytes: Annotated[
        int | None, typer.Option(help="Score the first N bytes of each response [as the BLT was trained].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Bits-per-byte of the held-out responses: BLT with and without retrieval, the baseline, compressors."""
    from training.commands import BpbEvalConfig, eval_bpb_command  # lazy: the body loads only when it runs

    cfg = BpbEvalConfig(
        checkpoint=checkpoint,
        baseline=baseline,
        k=k,
        compressors=compressors,
        max_records=max_records,
        response_bytes=response_bytes,
    )
    report = eval_bpb_command(cfg, **corpus_source(paths))
    if as_json:
        emit_json({k: v for k, v in report.items() if k != "markdown"})
    else:
        typer.echo(report.get("markdown", ""))


def retrieval(
    dataset: Annotated[
        Path | None, typer.Argument(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/) [the held-out split].")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split of a BEIR dataset.")] = "test",
    corpus: Annotated[list[Path] | None, typer.Option(help="Corpus files for the held-out split [bundled].")] = None,
    embed: Annotated[str | None, typer.Option(help="title_text (BEIR default), title or text.")] = None,
    k: Annotated[str, typer.Option("-k", "--k", help="Cut-offs, comma-separated.")] = "1,3,5,10,100",
    mmr: Annotated[bool, typer.Option(help="Rerank with MMR.")] = False,
    mmr_lambda: Annotated[float, typer.Option(help="MMR relevance weight.")] = 0.5,
    fetch_k: Annotated[int, typer.Option(help="MMR candidates.")] = 20,
    exact: Annotated[bool, typer.Option(help="Brute-force search (MTEB's method) instead of Chroma's HNSW.")] = False,
    ignore_identical_ids: Annotated[bool, typer.Option(help="Drop a document whose id is the query's.")] = False,
    strict: Annotated[bool, typer.Option(help="Unknown ids in qrels are errors.")] = False,
    run_file: Annotated[Path | None, typer.Option(help="Also write a TREC run file.")] = None,
    mode: Annotated[
        str | None, typer.Option(help="dense, hybrid, lexical, or all (every mode side by side) [[retrieval] mode].")
    ] = None,
    fusion: Annotated[str | None, typer.Option(help="convex or rrf [[retrieval] fusion].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Retrieval quality (nDCG, MRR, recall, precision, MAP, hit rate) in a throwaway collection."""
    from rag.eval.report import render_retrieval  # lazy: the command's body loads only when it runs
    from rag.eval.retrieval import modes_table, retrieval_command

    a = assistant(retrieval={"mode": mode if mode != "all" else None, "fusion": fusion})
    r, emb = a.settings.retrieval, a.settings.embedding
    if emb.precision == "auto":  # published figures are fp32; the store's precision has nothing to do with it
        emb.precision = "fp32"
    report = retrieval_command(
        dataset,
        split=split,
        corpus=corpus,
        model=emb.model,
        embedder=a.embedder,
        mode=mode or r.mode,
        fusion=a.fusion(),
        embed=embed,
        k=k,
        mmr=mmr,
        mmr_lambda=mmr_lambda,
        fetch_k=fetch_k,
        exact=exact,
        ignore_identical_ids=ignore_identical_ids,
        strict=strict,
        run_file=run_file,
        progress=sys.stderr.isatty(),
    )
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        typer.echo(render_retrieval(report) + ("\n\n" + modes_table(report) if report.modes else ""))


def generation(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Prompts with reference responses [the corpus's held-out split].")
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(help="NAME=OPTIONS (repeatable), e.g. rag=backend=blt,k=4,retrieval=on,memory=off."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder [eval-results/...]; rerunning resumes.")] = None,
    split: Annotated[str | None, typer.Option(help="Keep only records with this split.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many prompts.")] = None,
    judge: Annotated[str | None, typer.Option(help="Ollama model that judges faithfulness and relevance.")] = None,
    judge_host: Annotated[str | None, typer.Option(help="Ollama host of the judge.")] = None,
    judge_timeout: Annotated[float, typer.Option(help="Seconds per judge call.")] = 60.0,
    judge_retries: Annotated[int, typer.Option(help="Retries of a bad judge answer.")] = 2,
    fresh: Annotated[bool, typer.Option(help="Discard earlier results in the folder.")] = False,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals.")] = 1000,
) -> None:
    """Answer prompts under each configuration; chrF, ROUGE-L, similarity, confidence, latency; a report."""
    require_extra("eval generation", "eval")
    from rag.eval.generation import generation_command  # lazy: the command's body loads only when it runs

    run = generation_command(
        inputs,
        configs=config or ["default=backend=auto"],
        out=out,
        split=split,
        limit=limit,
        judge_model=judge,
        judge_host=judge_host,
        judge_timeout=judge_timeout,
        judge_retries=judge_retries,
        fresh=fresh,
        progress=sys.stderr.isatty(),
        plots=plots,
        bootstrap=bootstrap,
        settings=settings(),
    )
    typer.echo(f"answered {run.answered}, skipped {run.skipped}, errors {run.errors}: {run.folder / 'report.md'}")


def answers(
    data: Annotated[Path, typer.Argument(help="Questions: a SQuAD 2.0 .json file or a .jsonl (see rag.eval.squad).")],
    backends: Annotated[
        str, typer.Option(help="Generators to compare, comma-separated: mlx, blt, ollama (skipped when not running).")
    ] = "mlx,blt,ollama",
    configs: Annotated[
        str, typer.Option(help="Configurations per backend: ours, naive, noret (the top passage always runs).")
    ] = "ours,naive,noret",
    limit: Annotated[int | None, typer.Option(help="At most N questions of each kind (a stable sample).")] = None,
    held_back: Annotated[float, typer.Option(help="Share of articles held back as out-of-corpus.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the held-back split.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Write results.jsonl, summary.json, report.md, risk_coverage.png here.")
    ] = None,
    fit_calibration: Annotated[
        bool, typer.Option(help="Fit the confidence calibration of the configured store on our layer's answers.")
    ] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document.")] = False,
) -> None:
    """Answers end to end in a throwaway store: ours per backend beside no retrieval, a naive LangChain RAG chain
    and the top passage; EM, F1, abstention, AUROC, ECE, faithfulness."""
    require_extra("eval answers", "eval")
    from rag.eval.answers import AnswersError, parse_backends, parse_kinds, run_answers  # lazy: loads only when it runs
    from rag.eval.answers_report import markdown_table
    from rag.eval.squad import load_questions

    if limit is not None and limit < 1:
        raise typer.BadParameter("must be 1 or more", param_hint="--limit")
    names, kinds = parse_backends(backends), parse_kinds(configs)
    calibrate = None
    if fit_calibration:
        calibrate = assistant()
        if not callable(getattr(calibrate, "fit_calibration", None)):
            raise AnswersError(
                "--fit-calibration: this build has no Shvayambhu.fit_calibration (the calibration work is not "
                "merged yet); run without --fit-calibration"
            )
    qset = load_questions(data, held_back=held_back, seed=seed)
    progress = (lambda line: typer.echo(line, err=True)) if sys.stderr.isatty() else None
    report = run_answers(
        qset,
        settings(),
        backends=names,
        kinds=kinds,
        limit=limit,
        out=out,
        progress=progress,
        calibrate=calibrate,
        resamples=bootstrap,
    )
    report.pop("rows", None)
    if as_json:
        emit_json(report)
    else:
        typer.echo(markdown_table(report))
