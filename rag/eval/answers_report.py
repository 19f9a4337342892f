"""The answer benchmark's outputs: one side-by-side markdown table, the risk-coverage plot, and the files of a
run folder (results.jsonl, summary.json, report.md, risk_coverage.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (key, column header, decimals); every cell is mean [95% bootstrap interval]
COLUMNS = (
    ("em", "EM", 2),
    ("f1", "F1", 2),
    ("contains", "contains gold", 2),
    ("false_abstention", "false abstention", 2),
    ("abstain_out_of_corpus", "abstain: out-of-corpus", 2),
    ("abstain_adversarial", "abstain: adversarial", 2),
    ("auroc", "AUROC", 2),
    ("auroc_cv", "AUROC, 5-fold CV", 2),
    ("ece", "ECE", 2),
    ("wrong_confident", "wrong at conf>=0.8", 2),
    ("wrong_confident_cv", "wrong at conf>=0.8, CV", 2),
    ("faithfulness", "faithfulness", 2),
    ("citation_precision", "citation precision", 2),
)


def cell(stat: dict[str, Any] | None, decimals: int = 2, interval: bool = True) -> str:
    """`mean [lo, hi]`, or `-` when undefined."""
    if not stat or stat.get("mean") is None:
        return "-"
    f = f"{{:.{decimals}f}}"
    mean = f.format(stat["mean"])
    if not interval or stat.get("lo") is None:
        return mean
    return f"{mean} [{f.format(stat['lo'])}, {f.format(stat['hi'])}]"


def markdown_table(report: dict[str, Any], interval: bool = True) -> str:
    """One row per configuration, one column per metric (mean [95% CI]), then counts and notes."""
    configs = report["configs"]
    q = report["questions"]
    lines = [
        f"Questions: {q.get('answerable', 0)} answerable, {q.get('out_of_corpus', 0)} out-of-corpus, "
        f"{q.get('adversarial', 0)} adversarial (input `{report['input']}`"
        + (f", --limit {report['limit']} per kind" if report.get("limit") else "")
        + f"; {report['articles']['ingested']} articles ingested, {len(report['articles']['held_back'])} held back).",
        "Cells: mean [95% bootstrap interval]. Correct = token F1 >= 0.5; calibration over answerable questions.",
        "",
        "| configuration | " + " | ".join(h for _, h, _ in COLUMNS) + " | s/answer | errors |",
        "|---|" + "---:|" * (len(COLUMNS) + 2),
    ]
    for name, c in configs.items():
        cells = [cell(c["metrics"].get(k), d, interval) for k, _, d in COLUMNS]
        secs = "-" if c.get("seconds") is None else f"{c['seconds']:.2f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {secs} | {c['errors']} |")
    declines = [
        f"{n} {cell(c['metrics'].get('declines_out_of_corpus'), 2, False)}/"
        f"{cell(c['metrics'].get('declines_adversarial'), 2, False)}"
        for n, c in configs.items()
        if not n.startswith("top")
    ]
    notes = list(report.get("notes") or [])
    if declines:
        notes.append(
            "abstained = flagged low confidence, or the answer declines; the answer text itself declines "
            "(out-of-corpus/adversarial): " + ", ".join(declines)
        )
    notes += [f"{n}: {c['errors']} error(s), first: {c['first_error']}" for n, c in configs.items() if c["errors"]]
    if report.get("calibration") is not None:
        notes.append(f"calibration fitted: {json.dumps(report['calibration'], default=str)[:300]}")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot_risk_coverage(report: dict[str, Any], path: Path) -> Path | None:
    """Risk (share wrong) against coverage (share answered, most confident first), one line per configuration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: loads matplotlib
    from matplotlib.figure import Figure

    curves = {n: c["risk_coverage"] for n, c in report["configs"].items() if c["risk_coverage"]["coverage"]}
    if not curves:
        return None
    fig = Figure(figsize=(6.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for j, (name, rc) in enumerate(curves.items()):
        aurc = report["configs"][name]["metrics"]["aurc"].get("mean")
        label = f"{name} (AURC {aurc:.2f})" if aurc is not None else name
        ax.plot(rc["coverage"], rc["risk"], color=f"C{j % 10}", label=label, linestyle="--" if j >= 10 else "-")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("coverage (share of answerable questions answered, most confident first)")
    ax.set_ylabel("risk (share wrong, F1 < 0.5)")
    ax.set_title("risk-coverage: lower is better", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_outputs(report: dict[str, Any], rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """results.jsonl (one line per question per configuration), summary.json, report.md, risk_coverage.png."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "results.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (folder / "summary.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", "utf-8")
    files = [folder / "results.jsonl", folder / "summary.json", folder / "report.md"]
    png = plot_risk_coverage(report, folder / "risk_coverage.png")
    text = "# Answer benchmark\n\n" + markdown_table(report)
    if png is not None:
        files.append(png)
        text += f"\n![risk-coverage]({png.name})\n"
    (folder / "report.md").write_text(text, encoding="utf-8")
    return files
