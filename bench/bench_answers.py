"""Answers end to end on the development question set: ours per backend beside no retrieval, a naive LangChain
RAG chain and the top retrieved passage, in one side-by-side markdown table, with the risk-coverage plot and
the issue's targets checked. The store is a throwaway one; nothing the user stored is touched. Run:

    python bench/bench_answers.py --backends mlx,blt --limit 8
    python bench/bench_answers.py --data held_out.json --backends mlx --out bench/out/answers-heldout
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from blt.blas import enable_openblas  # noqa: E402

enable_openblas(verbose=False)  # before anything imports mlx

from rag.config import load_settings  # noqa: E402
from rag.eval.answers import CONFIG_KINDS, parse_backends, parse_kinds, run_answers  # noqa: E402
from rag.eval.answers_report import markdown_table  # noqa: E402
from rag.eval.squad import load_questions  # noqa: E402


def mean(report: dict, config: str, metric: str) -> float | None:
    c = report["configs"].get(config)
    return None if c is None else c["metrics"][metric]["mean"]


def targets(report: dict, backends: list[str]) -> list[str]:
    """The issue's targets, each met, missed or not measurable in this run."""
    lines = []

    def check(label: str, value: float | None, ok) -> None:
        verdict = "n/a" if value is None else ("met" if ok(value) else "MISSED")
        shown = "-" if value is None else f"{value:.2f}"
        lines.append(f"- {label}: {shown} ({verdict})")

    if "mlx" in backends:
        ours = "ours-mlx"
        check("mlx AUROC of confidence >= 0.80", mean(report, ours, "auroc"), lambda v: v >= 0.8)
        check("  the same, 5-fold cross-validated re-fit", mean(report, ours, "auroc_cv"), lambda v: v >= 0.8)
        check("mlx out-of-corpus abstain >= 0.90", mean(report, ours, "abstain_out_of_corpus"), lambda v: v >= 0.9)
        check("mlx false abstention <= 0.15", mean(report, ours, "false_abstention"), lambda v: v <= 0.15)
        f1, naive, noret = (mean(report, c, "f1") for c in (ours, "naive-mlx", "noret-mlx"))
        check("mlx F1 / naive RAG F1 >= 1.3", f1 / naive if f1 is not None and naive else None, lambda v: v >= 1.3)
        check("mlx F1 / no-retrieval F1 >= 2", f1 / noret if f1 is not None and noret else None, lambda v: v >= 2)
        check("mlx wrong at confidence >= 0.8 <= 0.10", mean(report, ours, "wrong_confident"), lambda v: v <= 0.1)
        check("  the same, cross-validated", mean(report, ours, "wrong_confident_cv"), lambda v: v <= 0.1)
    if "blt" in backends:
        ooc = mean(report, "ours-blt", "abstain_out_of_corpus")
        check("blt out-of-corpus abstain >= 0.95", ooc, lambda v: v >= 0.95)
        top = mean(report, "top-passage", "f1")
        blt = mean(report, "ours-blt", "f1_answered")
        check(
            "blt F1 where it answers - top-passage F1 >= 0",
            None if blt is None or top is None else blt - top,
            lambda v: v >= 0,
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO / "bench" / "data" / "answers" / "dev.json"))
    ap.add_argument("--backends", default="mlx,blt", help="mlx, blt, ollama (skipped when not running)")
    ap.add_argument("--configs", default=",".join(CONFIG_KINDS[1:]), help="ours, naive, noret")
    ap.add_argument("--limit", type=int, default=None, help="at most N questions of each kind")
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "answers"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    backends, kinds = parse_backends(args.backends), parse_kinds(args.configs)
    qset = load_questions(args.data)
    t0 = time.perf_counter()
    report = run_answers(
        qset,
        load_settings(overrides={"memory": {"enabled": False}}),
        backends=backends,
        kinds=kinds,
        limit=args.limit,
        out=Path(args.out),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        resamples=args.bootstrap,
    )
    print(markdown_table(report))
    print("Targets (issue 21):")
    print("\n".join(targets(report, backends)))
    print(f"\n{time.perf_counter() - t0:.0f} s; files in {args.out} (report.md, summary.json, risk_coverage.png)")


if __name__ == "__main__":
    main()
