"""The base MLX model and the one with a `shvayambhu finetune` adapter, side by side through the layer on the answer
benchmark (token F1, abstention, AUROC), and fine-tuning throughput against mlx-lm's own `lora` command on the
same examples. The store is a throwaway one; nothing the user stored is touched. Run:

    python bench/bench_finetune.py quality --adapter runs/finetune --limit 8
    python bench/bench_finetune.py offcorpus --adapter runs/finetune
    python bench/bench_finetune.py heldout --adapter runs/finetune
    python bench/bench_finetune.py throughput --run runs/finetune --steps 5

Both configurations answer with `[workspace] extractive = false` unless --extractive is given: the model, not the
extractive path, writes every answer. `--which base` (or tuned) runs one side alone and `--save FILE` keeps its
rows as JSON, so the base side can run while the adapter trains.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from blt.blas import enable_openblas  # noqa: E402

BLAS = enable_openblas(verbose=False)  # before anything imports mlx

METRICS = (
    "f1",
    "em",
    "abstain_out_of_corpus",
    "declines_out_of_corpus",
    "abstain_adversarial",
    "false_abstention",
    "auroc",
)


def quality(args: argparse.Namespace) -> None:
    """Ours-mlx with and without the adapter on the same questions, store and retrieval."""
    from rag.eval.answers import run_answers
    from rag.eval.squad import load_questions

    qset = load_questions(args.data)
    if args.kinds:  # a share of the question kinds (runs in parallel; `merge` scores them together)
        qset.questions = [q for q in qset.questions if q.kind in args.kinds.split(",")]
    rows, answers, scored = {}, {}, {}
    for name, settings in configs(args):
        t0 = time.perf_counter()
        report = run_answers(qset, settings, backends=["mlx"], kinds=["ours"], limit=args.limit, resamples=200)
        metrics = report["configs"]["ours-mlx"]["metrics"]
        rows[name] = {m: (metrics.get(m) or {}).get("mean") for m in METRICS}
        rows[name]["seconds"] = time.perf_counter() - t0
        answers[name] = [(r["question"], r["kind"], " ".join(str(r.get("answer", r.get("error"))).split())[:100])
                         for r in report["rows"] if r["config"] == "ours-mlx"]  # fmt: skip
        print(f"{name}: {report['questions']} in {rows[name]['seconds']:.0f} s", file=sys.stderr)
        scored[name] = [{k: v for k, v in r.items() if k != "object"} for r in report["rows"]]
        if args.save:
            doc = {"rows": rows, "answers": answers, "scored": scored}
            Path(args.save).write_text(json.dumps(doc, indent=1, default=str))
    if len(answers) == 2:
        for (question, kind, was), (_, _, now) in zip(answers["base"], answers["tuned"], strict=True):
            print(f"{kind}: {question}\n  base:  {was}\n  tuned: {now}", file=sys.stderr)
    s = settings
    weights = ", ".join(f"{n} {c.mlx.copy_weight}" for n, c in configs(args))
    title = (
        f"through the layer ({Path(args.data).name}, limit {args.limit}, copy_weight {weights}, "
        f"max_tokens {s.mlx.max_tokens}, extractive {s.workspace.extractive})"
    )
    print(f"| {title} | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, r in rows.items():
        print(f"| ours-mlx {name} | " + " | ".join("-" if r[m] is None else f"{r[m]:.3f}" for m in METRICS) + " |")
    f1b, f1t = rows.get("base", {}).get("f1"), rows.get("tuned", {}).get("f1")
    if f1b and f1t is not None:
        print(f"\ntoken F1 tuned / base: {f1t / f1b:.2f}x (target >= 1.3x)")


def merge(args: argparse.Namespace) -> None:
    """The metrics of `quality --save` files run on shares of the question kinds, scored together."""
    from rag.eval.answers import summarize

    scored: dict[str, list] = {}
    for path in args.saved:
        for name, rows in json.loads(Path(path).read_text()).get("scored", {}).items():
            scored.setdefault(name, []).extend(rows)
    print("| merged | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, rows in scored.items():
        metrics = summarize(rows, ["ours-mlx"], resamples=200)["ours-mlx"]["metrics"]
        r = {m: (metrics.get(m) or {}).get("mean") for m in METRICS}
        cells = " | ".join("-" if r[m] is None else f"{r[m]:.3f}" for m in METRICS)
        n = sum(row["config"] == "ours-mlx" for row in rows)
        print(f"| ours-mlx {name} ({n} questions) | {cells} |")


def configs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(name, settings) of the base model and the tuned one (`--which` picks), alike but for the adapter."""
    from rag.config import load_settings

    base = load_settings()
    base.mlx.adapter = ""
    base.workspace.extractive = args.extractive
    base.mlx.max_tokens = args.max_tokens
    if args.copy_weight is not None:  # copy mixing can make both copy the same sentence: 0 shows the model alone
        base.mlx.copy_weight = args.copy_weight
    tuned = copy.deepcopy(base)
    tuned.mlx.adapter = str(args.adapter)
    if args.tuned_copy_weight is not None:  # the decoding the adapter was trained for (e.g. 0: the model alone)
        tuned.mlx.copy_weight = args.tuned_copy_weight
    return [(n, s) for n, s in (("base", base), ("tuned", tuned)) if n in args.which.split(",")]


def offcorpus(args: argparse.Namespace) -> None:
    """General questions with no retrieval (bench/data/off_corpus.jsonl): MiniLM similarity of each model's answer
    to the reference answer; the tuned model must stay within 0.02 of the base."""
    from rag.api import Shvayambhu
    from rag.config import on_fresh_store

    records = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    records = records[: args.limit] if args.limit else records
    means: dict[str, float] = {}
    for name, settings in configs(args):
        with tempfile.TemporaryDirectory(prefix="bench-finetune-off-") as tmp:
            a = Shvayambhu(on_fresh_store(settings, Path(tmp), "offcorpus"))
            t0 = time.perf_counter()
            said = [a.ask(r["prompt"], backend="mlx", use_memory=False, use_retrieval=False).answer for r in records]
            means[name] = _similarity(a, said, [r["response"] for r in records])
            print(f"{name}: {len(records)} in {time.perf_counter() - t0:.0f} s, sim {means[name]:.3f}", file=sys.stderr)
            for r, s in zip(records, said, strict=True):
                print(f"  [{name}] {r['prompt']}\n    {' '.join(s.split())[:110]}", file=sys.stderr)
            if args.save:
                Path(args.save).write_text(json.dumps({"means": means, name: said}, indent=1))
    print(f"| off-corpus, no retrieval ({len(records)} questions) | MiniLM similarity to the reference |")
    print("|---|---|")
    for name, m in means.items():
        print(f"| ours-mlx {name} | {m:.3f} |")
    if len(means) == 2:
        loss = means["base"] - means["tuned"]
        print(f"\nloss tuned vs base: {loss:+.3f} (target <= 0.02): {'met' if loss <= 0.02 else 'NOT met'}")


def heldout(args: argparse.Namespace) -> None:
    """The bundled held-out split (records whose split is "heldout", never trained on) asked through the layer over
    a store holding the whole bundled corpus: MiniLM similarity and token F1 of each answer to the record's
    response, and how often each side abstains; beside them, the top retrieved passage given as the answer."""
    from ingest.records import heldout_flags
    from rag.api import Shvayambhu
    from rag.config import on_fresh_store
    from rag.eval.qa_metrics import abstained
    from training.data import records_from_files

    records = records_from_files([Path(args.data)])
    held = [r for r, flag in zip(records, heldout_flags(records)[0], strict=True) if flag]  # the one held-out rule
    held = held[: args.limit] if args.limit else held
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-held-") as tmp:
        for name, settings in configs(args):
            a = Shvayambhu(on_fresh_store(settings, Path(tmp), "heldout"))
            if not rows:  # the store, once; and the baseline: the top retrieved record's response as the answer
                a.ingest([Path(args.data)], progress=False)
                top = [(hits[0].response if hits else "", not hits) for hits in (a.search(r.prompt, k=1) for r in held)]
                rows["top passage (retrieval alone)"] = _held_scores(a, held, top)
            t0 = time.perf_counter()
            said = []
            for r in held:
                ans = a.ask(r.prompt, backend="mlx", use_memory=False)
                said.append((ans.answer, abstained(ans.answer, ans.low_confidence, ans.done_reason)))
            rows[f"ours-mlx {name}"] = _held_scores(a, held, said)
            print(f"{name}: {len(held)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for r, (s, _) in zip(held, said, strict=True):
                print(f"  [{name}] {r.prompt}\n    {' '.join(s.split())[:110]}", file=sys.stderr)
    print(f"| bundled held-out split ({len(held)} records, limit {args.limit}) | MiniLM similarity | token F1 | "
          "abstained |")  # fmt: skip
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['similarity']:.3f} | {r['f1']:.3f} | {r['abstained']:.3f} |")
    if args.save:
        Path(args.save).write_text(json.dumps(rows, indent=1))


def _held_scores(a: Any, held: list[Any], said: list[tuple[str, bool]]) -> dict[str, float]:
    from rag.eval.qa_metrics import token_f1

    f1 = [token_f1(s, [r.response]) or 0.0 for (s, _), r in zip(said, held, strict=True)]
    return {
        "similarity": _similarity(a, [s for s, _ in said], [r.response for r in held]),
        "f1": sum(f1) / len(f1),
        "abstained": sum(ab for _, ab in said) / len(said),
    }


def _similarity(a: Any, said: list[str], references: list[str]) -> float:
    """Mean MiniLM cosine of each answer to its reference (an empty answer counts as a blank)."""
    va = a.embedder.embed([s or " " for s in said])
    vr = a.embedder.embed(references)
    return float((va * vr).sum(1).mean())


def _mlx_lm_folder(folder: Path) -> None:
    """The bundled model, dequantized to float32, as an mlx-lm folder (what `mlx_lm lora --model` reads)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from rag.backends.gguf import bundled_model_path, load_gguf

    g = load_gguf(bundled_model_path(), "float32")
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(g.model.parameters())))
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(g.model.args)))
    g.tokenizer.tokenizer.save(str(folder / "tokenizer.json"))
    tok = {"chat_template": g.tokenizer.template_source, "eos_token": "<|im_end|>", "bos_token": None}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))


def _rate(points: list[tuple[float, float]]) -> float | None:
    """Tokens per second between the first report and the last ((seconds, tokens read) pairs): step 1, which
    compiles, is left out."""
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def throughput(args: argparse.Namespace) -> None:
    """Tokens read per second after the first (compiling) step: `training.finetune` (mlx-lm's train loop under our
    checkpoints and validation) and `python -m mlx_lm lora` on the same examples, the same LoRA shape, batch and
    step count, one after the other. mlx-lm's own display rounds tokens/s to an integer, so both are timed from
    their per-step reports: ours from the run log, mlx-lm's from the time each report line arrives."""
    from rag.backends.mlx import load_mlx_backend
    from rag.cli.finetune import train_examples
    from training.finetune import FinetuneConfig
    from training.raft_data import read_examples

    examples, digest = read_examples(Path(args.run) / "data" / "examples.jsonl")
    examples = [e for e in examples if e.split == "train"][: args.steps * args.batch_size * 2]
    shape = {"rank": 8, "layers": args.layers, "batch_size": args.batch_size, "max_seq": 512}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        t = Path(tmp)
        backend = load_mlx_backend()
        cfg = FinetuneConfig(t / "ours", steps=args.steps, eval_every=10**6, resume=False, report_every=1, **shape)
        info = {"sha256": digest, "examples": len(examples)}
        ours = train_examples(examples, info, backend, cfg)
        log = json.loads((t / "ours" / "manifest.json").read_text())["log"]
        ours_rate = _rate([(r["seconds"], r["read"]) for r in log if "read" in r])
        data = t / "data"
        data.mkdir()
        chats = [{"messages": e.messages + [{"role": "assistant", "content": e.target}]} for e in examples]
        for name in ("train", "valid"):
            (data / f"{name}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
        _mlx_lm_folder(t / "model")
        command = [
            sys.executable,
            "-m",
            "mlx_lm",
            "lora",
            "--model",
            str(t / "model"),
            "--train",
            "--data",
            str(data),
            "--iters",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--num-layers",
            str(args.layers),
            "--max-seq-length",
            "512",
            "--steps-per-report",
            "1",
            "--steps-per-eval",
            str(10**6),
            "--val-batches",
            "1",
            "--adapter-path",
            str(t / "theirs"),
        ]  # fmt: skip  (no --mask-prompt: then its token count is every token read, less one an example)
        env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
        if BLAS.backend == "openblas" and BLAS.path:  # the same BLAS for mlx-lm's process as for ours
            env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), str(BLAS.path)]))
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        points, lines = [], []
        for line in proc.stdout or []:
            lines.append(line)
            plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
            if m := re.match(r"^\s*(\d+)\s+[\d.]+\s*[▼▲]?\s+[\d,]+\s+([\d.]+)k\s*$", plain):
                steps_done = int(m.group(1))
                points.append((time.perf_counter() - t0, float(m.group(2)) * 1000 + steps_done * args.batch_size))
        proc.wait()
        theirs = _rate(points)
    print(f"| {args.steps} steps, batch {args.batch_size}, {args.layers} layers, rank 8 | tokens read/s after step 1 |")
    print("|---|---|")
    print(f"| shvayambhu finetune (training.finetune) | {ours_rate or 0:.1f} |")
    shown = f"{theirs:.1f}" if theirs is not None else f"- (exit {proc.returncode})"
    print(f"| python -m mlx_lm lora | {shown} |")
    print(f"(ours over the whole run, compile included: {ours['tokens_per_s']:.1f} tokens/s)")
    if theirs is None:
        print("".join(lines)[-2000:], file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality", help="base vs tuned through the layer on the answer benchmark")
    q.add_argument("--data", default=str(REPO / "bench" / "data" / "answers" / "dev.json"))
    q.add_argument("--limit", type=int, default=8, help="at most N questions of each kind")
    q.add_argument("--kinds", default=None, help="only these question kinds (comma-separated)")
    g = sub.add_parser("merge", help="score `quality --save` files of shares of the question kinds together")
    g.add_argument("saved", nargs="+")
    o = sub.add_parser("offcorpus", help="base vs tuned on general questions with no retrieval (forgetting)")
    o.add_argument("--data", default=str(REPO / "bench" / "data" / "off_corpus.jsonl"))
    o.add_argument("--limit", type=int, default=None, help="the first N questions")
    h = sub.add_parser("heldout", help="base vs tuned on the bundled held-out split, through the layer")
    h.add_argument("--data", default=str(REPO / "ingest" / "data" / "seed.jsonl"))
    h.add_argument("--limit", type=int, default=None, help="the first N held-out records")
    for p in (q, o, h):
        p.add_argument("--adapter", required=True, help="the `shvayambhu finetune --out` folder")
        p.add_argument("--which", default="base,tuned", help="comma-separated: base, tuned")
        p.add_argument("--copy-weight", type=float, default=None, help="[mlx] copy_weight for both (default: settings)")
        p.add_argument(
            "--tuned-copy-weight", type=float, default=None, help="[mlx] copy_weight for the tuned side only"
        )
        p.add_argument("--max-tokens", type=int, default=64, help="[mlx] max_tokens for both")
        p.add_argument("--extractive", action="store_true", help="keep [workspace] extractive on (default: off)")
        p.add_argument("--save", default=None, help="write the rows as JSON to this file")
    t = sub.add_parser("throughput", help="tokens/s of our run and of mlx_lm lora on the same examples")
    t.add_argument("--run", required=True, help="a `shvayambhu finetune --out` folder (its data/examples.jsonl)")
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--layers", type=int, default=8)
    args = ap.parse_args()
    commands = {"quality": quality, "offcorpus": offcorpus, "heldout": heldout, "throughput": throughput}
    (commands | {"merge": merge})[args.what](args)


if __name__ == "__main__":
    main()
