"""Answer quality of the `mlx` backend beside the BLT, with retrieval and without, through Shvayambhu end to end.

Prompt sets: `heldout` (the seed corpus's held-out records; retrieval never sees them), `offcorpus`
(bench/data/off_corpus.jsonl: general knowledge the corpus does not cover) and `validation` (non-held-out
seed records asked against a store without them: the place to choose settings such as [mlx] copy_weight).
Scores: chrF and embedding similarity (answer-reference, answer-question) from rag.eval.generation's scorer,
the low-confidence and abstention rates, answer length, invalid UTF-8 and runaway repetition. Every table has
the top retrieved answer as a row of its own (the stored answer of the first exemplar the layer retrieves, no
model): what retrieval alone says, and the ceiling that copying tends to. Answers are cached per configuration
under bench/out/ so a rerun resumes. Run:

    python bench/bench_answer_quality.py --sets validation --backends mlx --copy-weights 0,0.3,0.5 --limit 12
    python bench/bench_answer_quality.py --sets heldout,offcorpus --backends mlx,blt --copy-weights 0.3
    python bench/bench_answer_quality.py --sets heldout,offcorpus --backends "" --mode dense   # top retrieved only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "ingest" / "data" / "seed.jsonl"
OFF_CORPUS = REPO / "bench" / "data" / "off_corpus.jsonl"
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_blt_quality import max_repeats, top_retrieved, validation_files  # noqa: E402 - also enables OpenBLAS before mlx

TOP = "top-ret"  # the backend column of the top retrieved answer's row

SETS = ("heldout", "offcorpus", "validation")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def prompts_for(name: str, folder: Path) -> tuple[list[dict], Path]:
    """(prompt records, corpus to store) for a prompt set."""
    if name == "validation":
        store, prompts = validation_files(folder)
        return read_jsonl(prompts), store
    if name == "heldout":
        return [r for r in read_jsonl(SEED) if r.get("split") == "heldout"], SEED
    return read_jsonl(OFF_CORPUS), SEED


def config_name(
    pset: str, backend: str, retrieval: bool, copy: float | None, max_tokens: int, style: str, mode: str
) -> str:
    ret = f"ret-copy{copy:g}" if retrieval and copy is not None else ("ret" if retrieval else "noret")
    return f"{pset}-{backend}-{ret}-{style}-{mode}-t{max_tokens}"


def answers(app, cfg: str, records: list[dict], backend: str, retrieval: bool) -> list[dict]:
    """Answers for `records`, resumed from and appended to bench/out/quality-<cfg>.jsonl (app None: only the
    cached ones)."""
    path = OUT / f"quality-{cfg}.jsonl"
    done = {r["prompt"]: r for r in read_jsonl(path)} if path.exists() else {}
    if app is None:
        return [done[r["prompt"]] for r in records if r["prompt"] in done]
    out = []
    with path.open("a", encoding="utf-8") as f:
        for rec in records:
            if rec["prompt"] not in done:
                a = app.ask(rec["prompt"], backend=backend, use_memory=False, use_retrieval=retrieval)
                row = {
                    "prompt": rec["prompt"],
                    "reference": rec["response"],
                    "answer": a.answer,
                    "confidence": a.confidence,
                    "low_confidence": a.low_confidence,
                    "abstain": a.done_reason == "abstain",
                    "sources": [s.prompt for s in a.sources],
                    "source_scores": [round(s.score, 4) for s in a.sources],
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                done[rec["prompt"]] = row
                print(f"  [{cfg}] {len(done)}/{len(records)} {a.answer[:70]!r}", flush=True)
            out.append(done[rec["prompt"]])
    return out


def cached_top_retrieved(app, pset: str, mode: str, records: list[dict]) -> list[dict]:
    """bench_blt_quality.top_retrieved for `records`, cached in bench/out/quality-<set>-top-<mode>.jsonl (app
    None: only the cached rows)."""
    path = OUT / f"quality-{pset}-top-{mode}.jsonl"
    done = {r["prompt"]: r for r in read_jsonl(path)} if path.exists() else {}
    if app is not None and (todo := [r for r in records if r["prompt"] not in done]):
        with path.open("a", encoding="utf-8") as f:
            for row in top_retrieved(app, todo):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                done[row["prompt"]] = row
    return [done[r["prompt"]] for r in records if r["prompt"] in done]


def summarise(rows: list[dict], scorer) -> dict[str, float]:
    """Mean scores over answered rows."""
    texts = [r["answer"] or " " for r in rows]
    vec_a = scorer.embedder.embed(texts)
    vec_q = scorer.embedder.embed([r["prompt"] for r in rows])
    vec_r = scorer.embedder.embed([r["reference"] for r in rows])
    chrf = [scorer._chrf.sentence_score(r["answer"], [r["reference"]]).score for r in rows]
    return {
        "n": len(rows),
        "chrf": statistics.mean(chrf),
        "sim_ref": float(statistics.mean((vec_a * vec_r).sum(1))),
        "sim_q": float(statistics.mean((vec_a * vec_q).sum(1))),
        "low_conf": sum(r["low_confidence"] for r in rows) / len(rows) if "low_confidence" in rows[0] else None,
        "abstain": sum(r["abstain"] for r in rows) / len(rows) if "abstain" in rows[0] else None,
        "words": statistics.mean(len(r["answer"].split()) for r in rows),
        "bad_utf8": sum("\ufffd" in r["answer"] for r in rows),
        "runaway": sum(max_repeats(r["answer"]) > 3 for r in rows),
    }


def checks(table: dict[tuple, dict]) -> None:
    """The issue's three targets, met or not, from whatever rows the table holds."""

    def get(*key):
        return table.get(key)

    print("\nTargets:")
    on, off = get("heldout", "mlx", True), get("heldout", "mlx", False)
    if on and off:
        ratio = on["chrf"] / off["chrf"] if off["chrf"] else float("inf")
        met = ratio >= 1.3 and on["sim_ref"] > off["sim_ref"]
        print(
            f"  held-out chrF mlx ret/no-ret {ratio:.2f}x (>= 1.3x), sim {on['sim_ref']:.3f} > {off['sim_ref']:.3f}: "
            f"{'met' if met else 'NOT met'}"
        )
    m, b = get("offcorpus", "mlx", True), get("offcorpus", "blt", True)
    if m and b:
        ratio = m["sim_ref"] / b["sim_ref"] if b["sim_ref"] > 0 else float("inf")
        met = ratio >= 2 or b["abstain"] >= 0.9
        print(
            f"  off-corpus sim mlx/blt {ratio:.2f}x (>= 2x) or BLT abstains {b['abstain']:.0%} (>= 90%): "
            f"{'met' if met else 'NOT met'}"
        )
    on, off = get("offcorpus", "mlx", True), get("offcorpus", "mlx", False)
    if on and off:
        ratio = on["sim_ref"] / off["sim_ref"] if off["sim_ref"] else float("inf")
        print(f"  off-corpus mlx sim ret/no-ret {ratio:.3f} (>= 0.95): {'met' if ratio >= 0.95 else 'NOT met'}")


def rate(x: float | None) -> str:
    return f"{'-':>7}" if x is None else f"{x:7.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="heldout,offcorpus", help=f"comma-separated of {', '.join(SETS)}")
    ap.add_argument("--backends", default="mlx,blt")
    ap.add_argument("--retrieval", default="on,off", help="comma-separated: on, off")
    ap.add_argument("--limit", type=int, default=None, help="prompts per set [all]")
    ap.add_argument("--start", type=int, default=0, help="skip the first prompts of each set (to split a run)")
    ap.add_argument("--max-tokens", type=int, default=160, help="[mlx] max_tokens")
    ap.add_argument("--copy-weights", default=None, help="comma-separated [mlx] copy_weight values [the default]")
    ap.add_argument("--prompt-style", default=None, help="[mlx] prompt_style (full | compact) [the default]")
    ap.add_argument("--mode", default=None, help="[retrieval] mode (dense | hybrid | lexical) [the default]")
    ap.add_argument("--cached", action="store_true", help="score the cached answers only; generate nothing")
    args = ap.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    if bad := [s for s in sets if s not in SETS]:
        ap.error(f"--sets: unknown {bad}; choose from {', '.join(SETS)}")
    retrievals = [{"on": True, "off": False}[x] for x in args.retrieval.split(",")]
    weights = [float(w) for w in args.copy_weights.split(",")] if args.copy_weights else [None]

    from rag.api import Shvayambhu
    from rag.config import load_settings
    from rag.eval.generation import _Scorer

    OUT.mkdir(parents=True, exist_ok=True)
    scorer = _Scorer()
    table: dict[tuple, dict] = {}
    mlx_section: dict = {"max_tokens": args.max_tokens}
    if args.prompt_style:
        mlx_section["prompt_style"] = args.prompt_style
    for pset in sets:
        with tempfile.TemporaryDirectory() as tmp:
            records, store = prompts_for(pset, Path(tmp))
            records = records[args.start : args.limit]
            overrides = {"store": {"data_dir": tmp}, "mlx": mlx_section}
            if args.mode:
                overrides["retrieval"] = {"mode": args.mode}
            settings = load_settings(overrides=overrides, environ={})
            style, mode = getattr(settings.mlx, "prompt_style", "full"), settings.retrieval.mode
            app = None if args.cached else Shvayambhu(settings)
            if app is not None:
                app.ingest([store], progress=False)
            if rows := cached_top_retrieved(app, pset, mode, records):
                table[(pset, TOP, True, None)] = summarise(rows, scorer)
            for backend in [b for b in args.backends.split(",") if b]:
                for retrieval in retrievals:
                    for w in weights if backend == "mlx" and retrieval else [None]:
                        if w is not None:
                            settings.mlx.copy_weight = w
                        cw = settings.mlx.copy_weight if backend == "mlx" and retrieval else None
                        label = style if backend == "mlx" else "full"  # only the mlx backend reads the style
                        cfg = config_name(pset, backend, retrieval, cw, args.max_tokens, label, mode)
                        rows = answers(app, cfg, records, backend, retrieval)
                        if rows:
                            table[(pset, backend, retrieval, cw)] = summarise(rows, scorer)
    print(f"\nmax_tokens {args.max_tokens}, greedy; noisy: 2 shared CPU cores (decoding speed is not measured here)")
    head = "set        backend ret copy    n   chrF  sim(a,ref) sim(a,q) lowconf abstain words badUTF8 runaway"
    print(head)
    print(f"({TOP}: the top retrieved answer, the stored answer of the layer's first exemplar, no model)")
    for (pset, backend, retrieval, cw), s in table.items():
        print(
            f"{pset:<10} {backend:<7} {'on ' if retrieval else 'off'} {'' if cw is None else f'{cw:g}':<5} "
            f"{s['n']:>4} {s['chrf']:6.2f} {s['sim_ref']:10.3f} {s['sim_q']:8.3f} {rate(s['low_conf'])} "
            f"{rate(s['abstain'])} {s['words']:5.0f} {s['bad_utf8']:7d} {s['runaway']:7d}"
        )
    checks({(p, b, r): s for (p, b, r, _), s in table.items()})


if __name__ == "__main__":
    main()
