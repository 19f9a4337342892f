"""Summaries, Markdown reports and plots of evaluation runs (plots drawn without pyplot's global state)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.eval.metrics import FAMILIES, bootstrap_ci, spearman
from rag.eval.results import latest_rows, read_results

# (key, label, decimals) in report order
GEN_METRICS: list[tuple[str, str, int]] = [
    ("chrf", "chrF", 2),
    ("rouge_l", "ROUGE-L F1", 4),
    ("embed_sim", "embedding similarity", 4),
    ("judge_relevance", "judge relevance (1-5)", 2),
    ("judge_faithfulness", "judge faithfulness (1-5)", 2),
    ("confidence", "confidence", 4),
    ("bpb", "BPB of reference", 4),
    ("latency_ms", "latency (ms)", 1),
    ("bytes_per_s", "bytes/s", 1),
    ("answer_bytes", "answer bytes", 0),
]
QUALITY_FOR_CALIBRATION = ("embed_sim", "chrf", "rouge_l", "judge_relevance", "judge_faithfulness")


def summarize(
    rows: Sequence[dict[str, Any]],
    run: dict[str, Any],
    *,
    bootstrap: int = 1000,
    aborted: dict[str, str] | None = None,
    unreadable: int = 0,
) -> dict[str, Any]:
    """Per configuration: counts, each metric's mean with a bootstrap 95% interval, judge and calibration."""

    latest = latest_rows(rows)
    n_examples = int(run.get("examples") or len({k[0] for k in latest}))
    names = list(run.get("configs") or {}) or sorted({k[1] for k in latest})
    configs: dict[str, Any] = {}
    for name in names:
        mine = [r for (_, c), r in latest.items() if c == name]
        ok = [r for r in mine if not r.get("error")]
        metrics = {}
        for key, _, _ in GEN_METRICS:
            values = [r["metrics"].get(key) for r in ok]
            if any(v is not None for v in values):
                metrics[key] = bootstrap_ci(values, resamples=bootstrap)
        judged = [r["judge"] for r in ok if isinstance(r.get("judge"), dict)]
        calibration: dict[str, Any] = {}
        for q in QUALITY_FOR_CALIBRATION:
            pairs = [
                (r["metrics"]["confidence"], r["metrics"][q])
                for r in ok
                if r["metrics"].get("confidence") is not None and r["metrics"].get(q) is not None
            ]
            if pairs:
                calibration[f"spearman_confidence_{q}"] = spearman([p[0] for p in pairs], [p[1] for p in pairs])
        lows = [r.get("low_confidence") for r in ok if r.get("low_confidence") is not None]
        if lows:
            calibration["low_confidence_rate"] = sum(map(bool, lows)) / len(lows)
        configs[name] = {
            "options": (run.get("configs") or {}).get(name, {}),
            "answered": len(ok),
            "errors": len(mine) - len(ok),
            "missing": max(0, n_examples - len(mine)),
            "aborted": (aborted or {}).get(name),
            "first_error": next((r["error"] for r in mine if r.get("error")), None),
            "metrics": metrics,
            "judge": {
                "judged": sum(1 for j in judged if j.get("error") is None),
                "failed": sum(1 for j in judged if j.get("error") is not None),
                "parse_failures": sum(int(j.get("parse_failures") or 0) for j in judged),
                "timeouts": sum(int(j.get("timeouts") or 0) for j in judged),
                "errors": sum(int(j.get("errors") or 0) for j in judged),
                "faithfulness_not_applicable": sum(
                    1 for j in judged if j.get("error") is None and j.get("faithfulness") is None
                ),
            }
            if judged
            else None,
            "calibration": calibration,
            "leaks": sum(1 for r in ok if r.get("leak")),
            "bpb_errors": sum(1 for r in ok if r.get("bpb_error")),
        }
    return {
        "input": run.get("input"),
        "examples": n_examples,
        "judge": run.get("judge"),
        "created": run.get("created"),
        "notes": run.get("notes") or [],
        "unreadable_result_lines": unreadable,
        "bootstrap": {"resamples": bootstrap, "interval": 0.95, "method": "percentile"},
        "configs": configs,
    }


def _cell(stat: dict[str, Any] | None, decimals: int) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    f = f"{{:.{decimals}f}}"
    return f"{f.format(stat['mean'])} [{f.format(stat['lo'])}, {f.format(stat['hi'])}]"


def markdown_report(summary: dict[str, Any], images: Sequence[str] = ()) -> str:
    """report.md: configurations side by side (mean [95% CI]), then counts, calibration and notes."""
    configs = summary["configs"]
    names = list(configs)
    lines = [
        "# Generation evaluation",
        "",
        f"- input: `{summary.get('input') or '?'}` ({summary['examples']} prompts)",
        f"- judge: {summary.get('judge') or 'none'}",
        f"- created: {summary.get('created') or '?'}",
        "- cells: mean [95% bootstrap interval] over the prompts answered",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label, dec in GEN_METRICS:
        if any(key in configs[n]["metrics"] for n in names):
            lines.append(f"| {label} | " + " | ".join(_cell(configs[n]["metrics"].get(key), dec) for n in names) + " |")
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    opts = [", ".join(f"{k}={v}" for k, v in configs[n]["options"].items()) for n in names]
    lines.append("| options | " + " | ".join(opts) + " |")
    for key, label in (
        ("answered", "answered"),
        ("errors", "errors"),
        ("missing", "not answered yet"),
        ("leaks", "reference prompt among sources"),
    ):
        lines.append(f"| {label} | " + " | ".join(str(configs[n][key]) for n in names) + " |")
    if any(configs[n]["judge"] for n in names):
        for key in ("judged", "failed", "parse_failures", "timeouts", "errors"):
            vals = [str((configs[n]["judge"] or {}).get(key, "-")) for n in names]
            lines.append(f"| judge {key.replace('_', ' ')} | " + " | ".join(vals) + " |")
    cal_keys = sorted({k for n in names for k in configs[n]["calibration"]})
    if cal_keys:
        lines += [
            "",
            "## Calibration",
            "",
            "Spearman correlation between the answer's own confidence and its quality (higher is better).",
            "",
            "| | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for k in cal_keys:
            vals = [configs[n]["calibration"].get(k) for n in names]
            lines.append(f"| {k} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    notes = list(summary.get("notes") or [])
    for n in names:
        if configs[n]["aborted"]:
            notes.append(f"{n}: {configs[n]['aborted']}")
        elif configs[n]["first_error"]:
            notes.append(f"{n}: {configs[n]['errors']} error(s), first: {configs[n]['first_error']}")
        if configs[n]["leaks"]:
            notes.append(
                f"{n}: {configs[n]['leaks']} answer(s) had the reference's own prompt among the sources "
                "(the held-out record is in the collection)"
            )
    if summary.get("unreadable_result_lines"):
        notes.append(f"{summary['unreadable_result_lines']} unreadable line(s) in results.jsonl were skipped")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if images:
        lines += ["", "## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: loads matplotlib
    from matplotlib.figure import Figure  # lazy: loads matplotlib

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_metrics(summary: dict[str, Any], path: Path) -> Path | None:
    """One bar chart per metric: each configuration's mean with its 95% interval."""
    configs = summary["configs"]
    names = list(configs)
    keys = [(k, label) for k, label, _ in GEN_METRICS if any(k in configs[n]["metrics"] for n in names)]
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig = _figure(4.2 * cols, 3.2 * rows)
    for i, (key, label) in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        stats = [configs[n]["metrics"].get(key) or {} for n in names]
        means = [s.get("mean") or 0.0 for s in stats]
        err = [
            [max(0.0, (s.get("mean") or 0) - (s.get("lo") or 0)) for s in stats],
            [max(0.0, (s.get("hi") or 0) - (s.get("mean") or 0)) for s in stats],
        ]
        ax.bar(range(len(names)), means, yerr=err, capsize=4, color=[f"C{j}" for j in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_calibration(
    rows: Sequence[dict[str, Any]], names: Sequence[str], path: Path, quality: str = "embed_sim"
) -> Path | None:
    """Confidence against answer quality, one colour per configuration, with binned means."""
    import numpy as np

    pts = {
        n: [
            (r["metrics"]["confidence"], r["metrics"][quality])
            for r in rows
            if r["config"] == n
            and not r.get("error")
            and r["metrics"].get("confidence") is not None
            and r["metrics"].get(quality) is not None
        ]
        for n in names
    }
    if not any(pts.values()):
        return None
    fig = _figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for j, n in enumerate(names):
        if not pts[n]:
            continue
        x, y = np.array(pts[n]).T
        ax.scatter(x, y, s=14, alpha=0.5, color=f"C{j}", label=n)
        edges = np.linspace(0, 1, 6)
        idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
        bx = [x[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()]
        by = [y[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()]
        ax.plot(bx, by, color=f"C{j}", marker="o")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("answer's own confidence")
    ax.set_ylabel({"embed_sim": "embedding similarity to reference"}.get(quality, quality))
    ax.set_title("calibration: confidence vs quality (dots: answers, line: binned means)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(
    folder: str | Path, *, bootstrap: int = 1000, plots: bool = True, aborted: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[Path]]:
    """(Re)write summary.json, report.md and the PNGs of a run folder from its results.jsonl."""

    folder = Path(folder)
    run_path = folder / "run.json"
    run = json.loads(run_path.read_text(encoding="utf-8")) if run_path.exists() else {}
    rows, bad = read_results(folder / "results.jsonl")
    summary = summarize(rows, run, bootstrap=bootstrap, aborted=aborted, unreadable=bad)
    files = [folder / "results.jsonl"]
    images: list[str] = []
    if plots:
        names = list(summary["configs"])
        latest = list(latest_rows(rows).values())
        for p in (
            plot_metrics(summary, folder / "metrics.png"),
            plot_calibration(latest, names, folder / "calibration.png"),
        ):
            if p is not None:
                images.append(p.name)
                files.append(p)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
    (folder / "report.md").write_text(markdown_report(summary, images), encoding="utf-8")
    return summary, [folder / "summary.json", folder / "report.md", *files]


def render_retrieval(report: Any) -> str:
    """Plain-text table of a RetrievalReport: metric families by cutoff, then counts and timings."""
    info, m = report.info, report.metrics
    ks = info.get("ks") or sorted({int(k.split("@")[1]) for k in m if "@" in k})
    head = (
        f"{info.get('dataset')} ({info.get('split')}): {report.queries} queries, {report.docs} docs; "
        f"model {info.get('model')}"
        + (f" ({info['precision']})" if info.get("precision") else "")
        + f", embed {info.get('embed')}, search {info.get('search')}"
        + (", MMR" if info.get("mmr") else "")
    )
    labels = {
        "ndcg": "nDCG",
        "mrr": "MRR",
        "recall": "Recall",
        "precision": "P",
        "map": "MAP",
        "hit_rate": "Hit",
    }
    lines = [head, "", f"{'':8}" + "".join(f"{'@' + str(k):>9}" for k in ks)]
    for fam in FAMILIES:
        lines.append(f"{labels[fam]:8}" + "".join(f"{m.get(f'{fam}@{k}', float('nan')):9.4f}" for k in ks))
    lines.append(f"MAP (uncut) {m.get('map', 0):.4f}   MRR (uncut) {m.get('mrr', 0):.4f}")
    if "ann_recall@10" in info:
        lines.append(f"HNSW recall of the exact top 10: {info['ann_recall@10']:.4f}")
    if info.get("queries_without_positives"):
        lines.append(f"{info['queries_without_positives']} queries have no relevant document (they score 0)")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items()))
    for w in info.get("warnings") or []:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
