"""Quality of the shipped BLT: chrF against the reference answers with retrieval and without, from the same
checkpoint in the same run, plus UTF-8 validity and runaway repetition, beside the top retrieved answer (the
stored answer of the first exemplar the layer retrieves, no model). Run:

    python bench/bench_blt_quality.py [--checkpoint DIR] [--limit N] [--copy-weights 0.5,0.25,0]
    python bench/bench_blt_quality.py --prompts validation --copy-weights 0,0.25,0.5   # choose copy_weight
    python bench/bench_blt_quality.py --top-only   # the top retrieved answer's row alone (no model: seconds)

`heldout` prompts are the corpus's held-out records (never trained on, not in the store). `validation`
prompts are the records `shvayambhu train` set aside for early stopping (same split), with a store of every
record but those and the held-out ones: the place to choose settings without looking at the held-out set.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "ingest" / "data" / "seed.jsonl"
sys.path.insert(0, str(REPO))

from blt import blas  # noqa: E402

blas.enable_openblas(verbose=False)  # before mlx: OpenBLAS when installed


def max_repeats(text: str, n: int = 20) -> int:
    """How often the most frequent n-byte sequence occurs in text (non-overlapping counts are not needed)."""
    data = text.encode("utf-8")
    counts = Counter(data[i : i + n] for i in range(0, max(0, len(data) - n + 1)))
    return max(counts.values(), default=0)


def validation_files(folder: Path) -> tuple[Path, Path]:
    """(store corpus, prompts): the training run's validation records as prompts, the rest as the store."""
    from blt.data import Sample, split_validation
    from training.data import records_from_files

    rest = [r for r in records_from_files([SEED]) if r.split != "heldout"]
    _, val = split_validation([Sample(r.prompt, r.response, id=r.id) for r in rest], 0.05, 0)  # as `train`
    val_ids = {s.id for s in val}
    store, prompts = folder / "store.jsonl", folder / "validation.jsonl"
    with store.open("w", encoding="utf-8") as s, prompts.open("w", encoding="utf-8") as p:
        for r in rest:
            row = {"prompt": r.prompt, "response": r.response, "category": r.category}
            (p if r.id in val_ids else s).write(json.dumps(row) + "\n")
    return store, prompts


def top_retrieved(app, records: list[dict], k: int | None = None) -> list[dict]:
    """For each {"prompt", "response"} record, the stored answer of the first exemplar the layer retrieves for its
    prompt (the layer's own retrieval: [retrieval] mode, k, held-out records left out) as {"prompt", "reference",
    "answer", "sources", "source_scores"}: what retrieval alone says, and the ceiling copying tends to."""
    from rag.exemplars import exemplars

    corpus, r = app.corpus(), app.settings.retrieval
    lexical = app.lexical(corpus) if r.mode != "dense" else None
    rows = []
    for rec in records:
        q = rec["prompt"]
        hits = exemplars(corpus, app.embedder.embed_query(q), r, k or r.k, text=q, lexical=lexical, fusion=app.fusion())
        rows.append(
            {
                "prompt": q,
                "reference": rec["response"],
                "answer": hits[0].response if hits else "",
                "sources": [h.prompt for h in hits[:1]],
                "source_scores": [round(h.score, 4) for h in hits[:1]],
            }
        )
    return rows


def report(name: str, rows: list[dict], ci: dict | None) -> float:
    answers = [r.get("answer") or "" for r in rows]
    chrf = statistics.mean(r["metrics"]["chrf"] for r in rows if "chrf" in r.get("metrics", {}))
    ci_text = f" ({ci['lo']:.2f}-{ci['hi']:.2f})" if ci else ""
    print(
        f"{name:>20}: chrF {chrf:.2f}{ci_text}  mean answer {statistics.mean(len(a.encode()) for a in answers):.0f} B  "
        f"invalid-UTF-8 {sum(chr(0xFFFD) in a for a in answers)}  "
        f"runaway repetition {sum(max_repeats(a) > 3 for a in answers)}  "
        f"empty {sum(not a.strip() for a in answers)}  self-leaks {sum(bool(r.get('leak')) for r in rows)}",
        flush=True,
    )
    return chrf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="", help="BLT checkpoint [the shipped one]")
    ap.add_argument("--prompts", choices=["heldout", "validation"], default="heldout")
    ap.add_argument("--limit", type=int, default=None, help="prompts to use [all]")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--copy-weights", default=None, help="comma-separated [blt] copy_weight values [the default]")
    ap.add_argument("--repeat-penalty", type=float, default=None, help="[blt] repeat_penalty")
    ap.add_argument("--no-repeat-ngram", type=int, default=None, help="[blt] no_repeat_ngram")
    ap.add_argument("--top-only", action="store_true", help="only the top retrieved answer's row (no model)")
    ap.add_argument("--mode", default=None, help="[retrieval] mode (dense | hybrid | lexical) [the default]")
    args = ap.parse_args()
    blt_section: dict = {"checkpoint": args.checkpoint}
    if args.repeat_penalty is not None:
        blt_section["repeat_penalty"] = args.repeat_penalty
    if args.no_repeat_ngram is not None:
        blt_section["no_repeat_ngram"] = args.no_repeat_ngram

    from rag.api import Shvayambhu
    from rag.config import load_settings
    from rag.eval.generation import _Scorer, generation_command

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store, prompts = validation_files(folder) if args.prompts == "validation" else (SEED, None)
        overrides = {"store": {"data_dir": tmp}, "blt": blt_section}
        if args.mode:
            overrides["retrieval"] = {"mode": args.mode}
        settings = load_settings(overrides=overrides, environ={})
        weights = [float(w) for w in args.copy_weights.split(",")] if args.copy_weights else [None]
        app = Shvayambhu(settings)
        app.ingest([store], progress=False)
        b = settings.blt
        print(
            f"{args.prompts} prompts; checkpoint: {args.checkpoint or 'shipped default'}; k={args.k}, greedy, "
            f"repeat_penalty {b.repeat_penalty}, no_repeat_ngram {b.no_repeat_ngram}; retrieval "
            f"{settings.retrieval.mode}",
            flush=True,
        )
        if prompts:
            records = [json.loads(line) for line in prompts.open(encoding="utf-8") if line.strip()]
        else:
            records = [json.loads(line) for line in SEED.open(encoding="utf-8") if line.strip()]
            records = [r for r in records if r.get("split") == "heldout"]
        chrf_metric = _Scorer()._chrf
        top = top_retrieved(app, records[: args.limit], args.k)
        for row in top:
            row["metrics"] = {"chrf": chrf_metric.sentence_score(row["answer"], [row["reference"]]).score}
        report("top retrieved answer", top, None)
        if args.top_only:
            return
        chrf: dict[str, float] = {}
        examples: dict[str, dict] = {}

        def generated(configs: list[str], out: Path, run_settings: Any) -> tuple[list[dict], dict]:
            run = generation_command(
                [prompts] if prompts else None,
                configs=configs,
                out=out,
                limit=args.limit,
                progress=False,
                plots=False,
                bootstrap=500,
                settings=run_settings,
            )
            rows = [json.loads(line) for line in (run.folder / "results.jsonl").open(encoding="utf-8")]
            return rows, json.loads((run.folder / "summary.json").read_text()).get("configs", {})

        for i, w in enumerate(weights):
            if w is not None:
                settings.blt.copy_weight = w
            name = f"retrieval (copy {settings.blt.copy_weight:g})"
            with_retrieval = f"retrieval=backend=blt,k={args.k},retrieval=on,memory=off"
            rows, cis = generated([with_retrieval], folder / f"run{i}", settings)
            if i == 0:  # the model without retrieval (the weight does not matter: nothing is copied); [blt] abstain
                # off, or with no evidence the layer would only say that the corpus has nothing on it
                alone = copy.deepcopy(settings)
                alone.blt.abstain = False
                without = "no-retrieval=backend=blt,retrieval=off,memory=off"
                more, more_cis = generated([without], folder / "alone", alone)
                rows, cis = rows + more, {**cis, **more_cis}
            for cfg in ("no-retrieval", "retrieval"):
                got = [r for r in rows if r["config"] == cfg]
                if got:
                    label = "no retrieval" if cfg == "no-retrieval" else name
                    chrf[label] = report(label, got, cis.get(cfg, {}).get("metrics", {}).get("chrf"))
                    examples[label] = got[0]
    base = chrf["no retrieval"]
    for label, value in chrf.items():
        if label != "no retrieval":
            print(f"chrF ratio {label} / no retrieval: {value / base:.2f}x (target >= 2x)")
    print("\nexample prompt:", next(iter(examples.values()))["prompt"][:200])
    for label, row in examples.items():
        print(f"{label}: {row['answer'][:600]}")


if __name__ == "__main__":
    main()
