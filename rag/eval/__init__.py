"""Evaluation: retrieval on BEIR-layout datasets (trec_eval metrics), generation quality per configuration."""

from rag.eval.beir import BeirError, RetrievalDataset, heldout_dataset, load_beir
from rag.eval.generation import (
    Example,
    GenConfig,
    GenerationError,
    GenerationRun,
    generation_command,
    load_examples,
    parse_config,
    run_generation,
)
from rag.eval.judge import Judge, Verdict
from rag.eval.metrics import DEFAULT_KS, bootstrap_ci, evaluate_run, query_metrics
from rag.eval.report import render_retrieval, write_report
from rag.eval.retrieval import RetrievalOptions, RetrievalReport, evaluate_retrieval, retrieval_command

__all__ = [
    "DEFAULT_KS",
    "BeirError",
    "Example",
    "GenConfig",
    "GenerationError",
    "GenerationRun",
    "Judge",
    "RetrievalDataset",
    "RetrievalOptions",
    "RetrievalReport",
    "Verdict",
    "bootstrap_ci",
    "evaluate_retrieval",
    "evaluate_run",
    "generation_command",
    "heldout_dataset",
    "load_beir",
    "load_examples",
    "parse_config",
    "query_metrics",
    "render_retrieval",
    "retrieval_command",
    "run_generation",
    "write_report",
]
