"""`shvayambhu finetune`: retrieval-aware LoRA fine-tuning of the MLX model on prompts built by the answering layer.

This module is the wiring: it builds the fine-tuning store, asks every training question through the layer
(`Shvayambhu.prepare`, the same call `ask` makes) to get the exact messages the model will read, and hands the
tokenized examples and a fresh copy of the model to `training.finetune` (mlx-lm's tuner underneath).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rag.cli.common import assistant, emit_json
from rag.config import on_fresh_store
from training.text import BRIEF_WORDS


def layer_prompts(a: Any, backend: Any) -> Any:
    """question -> (messages, {record id: text the prompt shows of it}) through the layer; the mapping is empty
    when the layer puts no reference in the prompt. Memory is off: a training prompt holds documents only."""

    def layer(question: str) -> tuple[list[dict[str, str]], dict[str, str]]:
        prep = a.prepare(question, backend=backend, use_memory=False)
        shown = {
            c.meta["hit"].id: c.meta.get("focus") or c.meta["hit"].response
            for c in prep.workspace.winners
            if c.kind == "exemplar"
        }
        return prep.messages, shown

    return layer


def store_settings(settings: Any, folder: Path) -> Any:
    """A copy of `settings` on a fresh embedded store in `folder` (never the user's store)."""
    s = on_fresh_store(settings, folder, "finetune")
    s.memory.enabled = False
    s.mlx.adapter = ""  # the prompts are built for the base model; the tokenizer is the same either way
    return s


def prepare_data(
    records: list[Any],
    out: Path,
    settings: Any,
    *,
    plan_options: dict[str, Any],
    limit: int | None = None,
    anchor_options: dict[str, Any] | None = None,
    answer_words: int = BRIEF_WORDS,
) -> tuple[list[Any], dict[str, Any], Any]:
    """Plan the questions, ingest the store, ask each question through the layer, add anchoring examples
    (`anchor_options`: share, tokens, batch; see rag.cli.finetune_anchors); (examples, info, backend). A chat
    record's target is the opening of its answer, at most `answer_words`.
    Examples are written to out/data/examples.jsonl and read back from there when it exists (a resumed run)."""
    from rag.api import Shvayambhu
    from rag.cli.finetune_anchors import add_anchors
    from rag.consciousness.prompt import NOT_FOUND
    from training.raft_data import build_examples, plan_items, read_examples, write_examples

    data_dir = out / "data"
    path = data_dir / "examples.jsonl"
    a = Shvayambhu(store_settings(settings, out / "store"))
    backend = a.backend("mlx")
    if path.is_file():
        examples, digest = read_examples(path)
        info = json.loads((data_dir / "info.json").read_text())
        return examples, {**info, "sha256": digest}, backend
    vectors = a.embedder.embed([r.prompt for r in records])  # paraphrases are withheld and held out together
    plan = plan_items(records, embeddings=vectors, **plan_options)
    items = sorted(plan.items, key=lambda i: _spread(i.question))[:limit] if limit else plan.items
    data_dir.mkdir(parents=True, exist_ok=True)
    docs = data_dir / "store.jsonl"
    docs.write_text(
        "".join(
            json.dumps(
                {"prompt": r.prompt, "response": r.response, "category": r.category, "kind": r.kind},
                ensure_ascii=False,
            )
            + "\n"
            for r in plan.store
        ),
        encoding="utf-8",
    )
    a.ingest([docs], progress=False)
    unreferenced: list[Any] = []
    layer = layer_prompts(a, backend)
    examples, counts = build_examples(
        items,
        layer,
        NOT_FOUND,
        progress=_progress(len(items)),
        unreferenced=unreferenced,
        passages={r.id: r.response for r in records},
        similar=similarity(a.embedder),
        questions={r.id: r.prompt for r in records if r.kind == "pair"},
        answer_words=answer_words,
    )
    anchors = anchor_options or {"share": 0.0}  # none unless asked (the command asks for its --anchor-share)
    examples, anchored = add_anchors(a, backend, examples, items, unreferenced, **anchors)
    info = {
        **plan.info,
        "answer_words": answer_words,
        "asked": len(items),
        "counts": counts,
        "anchors": anchored,
        "examples": len(examples),
    }
    info["sha256"] = write_examples(path, examples)
    (data_dir / "info.json").write_text(json.dumps(info, indent=2))
    return examples, info, backend


def similarity(embedder: Any) -> Any:
    """(text, candidates) -> the cosine of `text` to each candidate, by the store's embedding model."""

    def similar(text: str, candidates: list[str]) -> list[float]:
        if not candidates:
            return []
        v = embedder.embed([text, *candidates])  # normalised rows
        return [float(x) for x in v[1:] @ v[0]]

    return similar


def _spread(text: str) -> bytes:
    """A stable pseudo-random order, so `--limit` samples every category rather than the corpus's first."""
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _progress(total: int) -> Any:
    tty = sys.stderr.isatty()

    def show(n: int) -> None:
        if tty and (n % 20 == 0 or n == total):
            sys.stderr.write(f"\rbuilding examples through the layer: {n}/{total}")
            sys.stderr.write("\n" if n == total else "")
            sys.stderr.flush()

    return show


def finetune(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Corpus files/folders [default: the bundled seed corpus].")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run folder: the adapter, manifest.json, checkpoint/, data/.")] = Path(
        "runs/finetune"
    ),
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    layers: Annotated[int, typer.Option(help="Adapters on the last N transformer blocks.")] = 8,
    max_seq: Annotated[int, typer.Option(help="Longest example in tokens (longer ones are left out).")] = 512,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 300,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 1e-4,
    eval_every: Annotated[int, typer.Option(help="Validate (and checkpoint) every N steps.")] = 50,
    patience: Annotated[int, typer.Option(help="Validations without improvement before stopping (0: never).")] = 3,
    abstain_share: Annotated[
        float, typer.Option(help="Share of records withheld from the store: their questions learn 'not found'.")
    ] = 0.12,
    anchor_share: Annotated[
        float, typer.Option(help="Share of examples that anchor: a prompt with no reference -> the base's answer.")
    ] = 0.3,
    anchor_tokens: Annotated[int, typer.Option(help="Longest anchor answer the base model writes (tokens).")] = 48,
    val_max: Annotated[int, typer.Option(help="Validation examples used at most (spread over the kinds).")] = 40,
    span_repeat: Annotated[
        int, typer.Option(help="Each training example with a short-span answer is seen N times (oversampling).")
    ] = 1,
    val_fraction: Annotated[float, typer.Option(help="Share of records whose questions validate.")] = 0.05,
    answer_words: Annotated[
        int, typer.Option(help="Longest target for a chat record's question: the opening of its answer, in words.")
    ] = BRIEF_WORDS,
    questions_per_passage: Annotated[int, typer.Option(help="Template questions written from each passage.")] = 4,
    span_questions: Annotated[
        int, typer.Option(help="Questions per passage written around a short answer span (a number, date, name).")
    ] = 8,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(help="An evaluation set (SQuAD-style JSON): its questions and passages are never trained on."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Ask at most N questions (a quick run).")] = None,
    dora: Annotated[bool, typer.Option(help="DoRA instead of LoRA.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the splits, data order and init.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from out/checkpoint.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Fine-tune the MLX model (LoRA through mlx-lm) on questions asked through this layer: the right passage in
    the prompt -> a brief answer from it; the passage withheld -> the layer's "not found". Held-out records are
    never trained on. Load the result with `[mlx] adapter = OUT`."""
    import shutil

    from ingest.bundled import seed_corpus
    from training.data import records_from_files
    from training.finetune import FinetuneConfig

    cfg = FinetuneConfig(
        out_dir=out,
        rank=rank,
        layers=layers,
        max_seq=max_seq,
        batch_size=batch_size,
        steps=steps,
        lr=lr,
        eval_every=eval_every,
        patience=patience,
        seed=seed,
        resume=resume,
        tune_type="dora" if dora else "lora",
    )
    if not resume:
        for sub in ("checkpoint", "data", "store"):
            shutil.rmtree(out / sub, ignore_errors=True)
    records = records_from_files(paths or seed_corpus())
    plan_options = {
        "abstain_share": abstain_share,
        "val_fraction": val_fraction,
        "generated": questions_per_passage,
        "spans": span_questions,
        "seed": seed,
        **excluded(exclude or []),
    }
    settings = assistant().settings
    anchors = {"share": anchor_share, "tokens": anchor_tokens, "seed": seed}
    examples, info, backend = prepare_data(
        records,
        out,
        settings,
        plan_options=plan_options,
        limit=limit,
        anchor_options=anchors,
        answer_words=answer_words,
    )
    result = train_examples(examples, info, backend, cfg, val_max=val_max, span_repeat=span_repeat)
    result["command"] = "shvayambhu " + " ".join(sys.argv[1:])
    if as_json:
        emit_json({"data": info, **result})
        return
    typer.echo(
        f"{info['examples']} examples ({info['questions']} questions, {info['generated']} written from passages); "
        f"{result['steps']} steps, best validation loss {result['best_val_loss']}, "
        f'{result["tokens_per_s"]:.0f} tokens/s; adapter in {out} (set [mlx] adapter = "{out}")'
    )


def excluded(paths: list[Path]) -> dict[str, list[str]]:
    """The questions and passages of evaluation sets (`--exclude`), as `plan_items` takes them."""
    from rag.eval.squad import load_questions

    questions: list[str] = []
    texts: list[str] = []
    for p in paths:
        qset = load_questions(p)
        questions += [q.question for q in qset.questions]
        texts += [text for a in qset.articles for text in a.paragraphs]
    return {"exclude_questions": questions, "exclude_texts": texts}


def val_kind(example: Any) -> str:
    """The group an example's validation loss is reported in: answer, span, abstain, twin or anchor."""
    if example.role in ("abstain", "anchor", "twin"):
        return example.role
    return "span" if example.kind == "span" else "answer"


def val_groups(examples: list[Any], limit: int) -> dict[str, list[Any]]:
    """At most `limit` validation examples grouped by `val_kind`, the kinds taken in turn (a stable choice)."""
    by: dict[str, list[Any]] = {}
    for e in sorted((e for e in examples if e.split == "val"), key=lambda e: _spread(e.question + e.target)):
        by.setdefault(val_kind(e), []).append(e)
    queues = {k: v[::-1] for k, v in sorted(by.items())}
    out: dict[str, list[Any]] = {k: [] for k in queues}
    while sum(map(len, out.values())) < limit and any(queues.values()):
        for k, q in queues.items():
            if q and sum(map(len, out.values())) < limit:
                out[k].append(q.pop())
    return out


def oversampled(examples: list[Any], span_repeat: int) -> list[Any]:
    """The train split, each short-span example `span_repeat` times: span answers are a small share of the
    examples, so without it the sentence answers set the style for questions that ask for a span."""
    from training.data import TrainingError

    if span_repeat < 1:
        raise TrainingError(f"span repeat must be at least 1, got {span_repeat}")
    return [e for e in examples if e.split == "train" for _ in range(span_repeat if val_kind(e) == "span" else 1)]


def train_examples(
    examples: list[Any], info: dict[str, Any], backend: Any, cfg: Any, *, val_max: int = 40, span_repeat: int = 1
) -> dict[str, Any]:
    """Tokenize with the backend's chat template and train a fresh copy of its model (the cached one, which
    answers, is never given adapters) on the train split (span examples `span_repeat` times), validated on at
    most `val_max` validation examples by kind; returns the run summary."""
    from rag.backends.mlx import _load
    from training.finetune import file_hash, run_finetune, tokenize

    tok = backend.tokenizer
    end = tok.encode(tok.eos, special=True)[-1] if tok.eos else min(tok.eos_ids)
    training = oversampled(examples, span_repeat)
    digest = info["sha256"]
    if span_repeat != 1:  # another mix of the same examples: a checkpoint of the other mix must not resume
        digest = hashlib.sha256(f"{digest}:span_repeat={span_repeat}".encode()).hexdigest()
    train, long_train = tokenize(training, tok.chat_ids, tok.encode, end, cfg.max_seq)
    val, long_val = {}, 0
    for kind, group in val_groups(examples, val_max).items():
        val[kind], n = tokenize(group, tok.chat_ids, tok.encode, end, cfg.max_seq)
        long_val += n
    model = _load.__wrapped__(str(backend.path), backend.loaded.dtype).model  # uncached: adapters go on this copy
    path = Path(backend.path)
    counts = {"train": len(train), "val": sum(map(len, val.values())), "too_long": long_train + long_val}
    manifest = {
        "base_model": {
            "name": backend.model,
            "path": str(path),
            "sha256": file_hash(path),
            "bytes": path.stat().st_size if path.is_file() else None,
            "dtype": backend.loaded.dtype,
        },
        "data": {**info, **counts, "train_by_kind": _count(training), "span_repeat": span_repeat},
        "command": "shvayambhu " + " ".join(sys.argv[1:]),
    }
    return run_finetune(model, train, val, cfg, data_hash=digest, manifest=manifest)


def _count(examples: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in examples:
        out[val_kind(e)] = out.get(val_kind(e), 0) + 1
    return out
