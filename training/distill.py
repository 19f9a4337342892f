"""Sequence-level distillation for the BLT (Kim and Rush, 2016): the teacher answers the prompt of every record
that is trained on, and `shvayambhu train --teacher` makes those answers the BLT's targets, in the BLT's own
retrieval-conditioned layout: the same prompt and the same retrieved exemplars (the corpus as stored), the
teacher's answer in place of the record's response.

The teacher is given from outside (the MLX chat model asked through the layer, rag.cli.distill): this module
decides which prompts it answers, keeps its answers across interruptions, and puts them in the samples.
Held-out records are never asked and never changed, so `eval bpb` scores a distilled BLT on the same records
and references as any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from blt.data import Sample
from ingest.records import HELDOUT_FRACTION, heldout_flags
from training.data import CorpusRecord, TrainingError
from training.raft_data import stable_hash

Teacher = Callable[[list[str]], list[str]]  # prompts -> answers, in order


def trainable(
    records: Sequence[CorpusRecord], *, heldout_fraction: float = HELDOUT_FRACTION, seed: int = 0
) -> list[CorpusRecord]:
    """The records that are not held out (the one held-out rule): the teacher's prompts and its stores."""
    held, _ = heldout_flags(records, heldout_fraction, seed)
    return [r for r, h in zip(records, held, strict=True) if not h]


def to_teach(records: Sequence[CorpusRecord], **heldout: Any) -> list[str]:
    """The prompts the teacher answers: every record's but the held-out ones (each prompt once, in order)."""
    return list(dict.fromkeys(r.prompt for r in trainable(records, **heldout)))


def fold_of(prompt: str, folds: int, seed: int = 0) -> int:
    """A stable fold for a prompt: the teacher answers each fold from a store of the others, so a record's own
    response is never in the teacher's prompt (the BLT never sees its own record either)."""
    return stable_hash(seed, "fold", prompt) % folds


def sample(prompts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """A stable pseudo-random `n` of `prompts` (every topic, not a corpus's first ones), in their order."""
    keep = set(sorted(prompts, key=lambda p: stable_hash(seed, "sample", p))[:n])
    return [p for p in prompts if p in keep]


def ask_all(
    prompts: Sequence[str],
    teacher: Teacher,
    *,
    batch: int = 16,
    done: dict[str, str] | None = None,
    on_batch: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """prompt -> the teacher's answer for each of `prompts` not in `done` (an interrupted run's answers), in
    batches of `batch`; `on_batch` gets each batch's answers as they come (to save them)."""
    if batch < 1:
        raise TrainingError(f"batch must be at least 1, got {batch}")
    answers = dict(done or {})
    todo = [p for p in dict.fromkeys(prompts) if p not in answers]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        said = teacher(chunk)
        if len(said) != len(chunk):
            raise TrainingError(f"the teacher gave {len(said)} answers for {len(chunk)} prompts")
        new = {p: a.strip() for p, a in zip(chunk, said, strict=True)}
        answers.update(new)
        if on_batch is not None:
            on_batch(new)
    return answers


def with_teacher(samples: Sequence[Sample], answers: dict[str, str]) -> tuple[list[Sample], int]:
    """`samples` with the teacher's answer as the response where it has one (exemplars unchanged: the student
    reads what retrieval gives at query time); (samples, how many were changed)."""
    out, changed = [], 0
    for s in samples:
        answer = answers.get(s.prompt)
        if answer:
            out.append(replace(s, response=answer, truncated=False))
            changed += 1
        else:
            out.append(s)
    return out, changed


def _write_lines(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """JSON lines written whole, then renamed over `path` (an interrupted write leaves the old file)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp.replace(p)


def write_corpus(path: str | Path, records: Sequence[CorpusRecord]) -> None:
    """The records as a JSONL corpus that `ingest` and `train` read (a held-out record keeps its mark)."""
    _write_lines(
        path,
        (
            {"prompt": r.prompt, "response": r.response, "category": r.category, "kind": r.kind}
            | ({"split": r.split} if r.split else {})
            for r in records
        ),
    )


def write_answers(path: str | Path, answers: dict[str, str]) -> None:
    """The teacher's answers as `train --teacher` reads them: {"prompt", "answer"} a line."""
    _write_lines(path, ({"prompt": p, "answer": a} for p, a in answers.items()))


def read_answers(path: str | Path) -> dict[str, str]:
    """prompt -> answer from an answers file (one JSON object a line; a torn last line is ignored)."""
    p = Path(path)
    out: dict[str, str] = {}
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line an interrupted write left half-written; its prompt is asked again
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("answer"), str):
            out[row["prompt"]] = row["answer"]
    return out


def append_answers(path: str | Path, answers: dict[str, str]) -> None:
    """Add a batch's answers to the run's answers file (what a resumed run reads back)."""
    with Path(path).open("a", encoding="utf-8") as f:
        for prompt, answer in answers.items():
            f.write(json.dumps({"prompt": prompt, "answer": answer}, ensure_ascii=False) + "\n")
        f.flush()
