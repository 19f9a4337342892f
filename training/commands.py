"""The `train` and `eval bpb` command bodies: what a run is told in one config, the corpus given beside it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blt import presets
from blt import train as T
from blt.bpb import bpb_report
from blt.data import DataConfig, clip_response
from index.errors import UsageError
from ingest.records import HELDOUT_FRACTION
from training.data import TrainingError, load_data
from training.distill import read_answers, with_teacher

STAGES = ("entropy", "blt", "baseline")


@dataclass
class TrainRunConfig:
    """What `shvayambhu train` is told: where to write, which stages, the model size, budgets and data layout.

    Time: the entropy model gets entropy_share of max_minutes, the BLT the rest (half of the rest when the
    baseline is trained too). Context: responses come first (a long one leaves little room), then up to k
    exemplars, each response clipped to exemplar_bytes, truncated from the least relevant end.
    `copy_warmup` is DataConfig.self_copy. `teacher`: a `shvayambhu distill` answers file whose answers replace
    the responses the BLT learns (exemplars stay the corpus's). `command` is recorded in the checkpoints [sys.argv].
    """

    out_dir: str | Path
    stages: Sequence[str] = STAGES
    size: str = "small"
    max_minutes: float | None = 30.0
    entropy_share: float = 0.2
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    k: int = 4
    max_bytes: int | None = None
    exemplar_bytes: int | None = 256
    dropout: float = 0.1
    eval_every: int | None = None
    patience: int | None = 5
    seed: int = 0
    heldout_fraction: float = HELDOUT_FRACTION
    val_fraction: float = 0.05
    resume: bool = True
    progress: bool = True
    command: str | None = None
    embedding_model: str | None = None
    response_bytes: int | None = None
    copy_warmup: float = 0.0
    teacher: str | Path | None = None

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise UsageError(f"unknown stage(s) {sorted(unknown)}: use {', '.join(STAGES)}")
        if self.size not in presets.SIZES:
            raise UsageError(f"unknown size {self.size!r}: use {', '.join(presets.SIZES)}")


@dataclass
class BpbEvalConfig:
    """What `shvayambhu eval bpb` is told: the checkpoint (and baseline) to score and how.

    `checkpoint` is a BLT checkpoint folder, its stage folder (blt/, best/ is used) or a run folder (the
    `train` output; its baseline/ is then used too unless `baseline` says otherwise). The exemplar count
    (`k`) and the response clip default to what the BLT was trained with.
    """

    checkpoint: str | Path
    baseline: str | Path | None = None
    k: int | None = None
    heldout_fraction: float = HELDOUT_FRACTION
    seed: int = 0
    batch_size: int = 8
    compressors: bool = True
    embedding_model: str | None = None
    max_records: int | None = None
    response_bytes: int | None = None


def train_command(
    cfg: TrainRunConfig, *, sources: Sequence[str | Path] | None = None, collection: Any = None
) -> dict[str, Any]:
    """`shvayambhu train`: the entropy model, then the BLT on its patches, then the byte-transformer baseline
    of equal non-embedding size for the BLT's wall time. Each stage resumes from its folder under out_dir
    (entropy/, blt/, baseline/: best/ and last/ checkpoints, log.jsonl). Returns the stage summaries.
    `sources` (files/folders) or an opened corpus `collection` give the records.
    """
    stages, size = cfg.stages, cfg.size
    command = cfg.command or " ".join(sys.argv)
    answers = read_answers(cfg.teacher) if cfg.teacher else None
    if cfg.teacher and not answers:
        raise TrainingError(f"{cfg.teacher}: no teacher answers in it; write them with `shvayambhu distill`")
    data = load_data(
        sources=sources,
        collection=collection,
        k=cfg.k,
        val_fraction=cfg.val_fraction,
        heldout_fraction=cfg.heldout_fraction,
        seed=cfg.seed,
        embedding_model=cfg.embedding_model,
    )
    if answers:  # sequence-level distillation: the teacher's answers are the targets (held-out records have none)
        (data.train, taught), (data.val, taught_val) = (with_teacher(part, answers) for part in (data.train, data.val))
        data.info["teacher"] = {"file": str(cfg.teacher), "train": taught, "val": taught_val}
    if cfg.response_bytes:  # shorter targets leave room in the context for the exemplars they should learn from
        clip = cfg.response_bytes
        data.train, data.val = ([clip_response(x, clip) for x in part] for part in (data.train, data.val))
        data.info["response_bytes"] = clip
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(data.info, indent=2))
    max_bytes = cfg.max_bytes or presets.DEFAULT_MAX_BYTES[size]
    dc = DataConfig(
        max_len=max_bytes + 1,
        max_exemplars=cfg.k,
        exemplar_bytes=cfg.exemplar_bytes,
        response_bytes=cfg.response_bytes,
        self_copy=cfg.copy_warmup,
    )
    common: dict[str, Any] = {
        "max_bytes": max_bytes,
        "data": dc,
        "max_steps": cfg.max_steps,
        "progress": cfg.progress,
        "resume": cfg.resume,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "eval_every": cfg.eval_every,
        "patience": cfg.patience,
        "seed": cfg.seed,
    }
    ent_cfg, blt_cfg = presets.model_configs(size, max_bytes, cfg.dropout)
    minutes = {"entropy": None, "blt": None}
    if cfg.max_minutes is not None:
        minutes["entropy"] = cfg.max_minutes * cfg.entropy_share
        rest = cfg.max_minutes - (minutes["entropy"] if "entropy" in stages else 0)
        minutes["blt"] = rest / 2 if "baseline" in stages else rest
    results: dict[str, Any] = {"data": data.info, "command": command}
    t0 = time.time()
    have_entropy = (out / "entropy" / "best").exists()
    if "entropy" in stages or ("blt" in stages and not have_entropy):
        stage = presets.stage_config("entropy", size, out / "entropy", max_minutes=minutes["entropy"], **common)
        results["entropy"] = T.train_entropy(data.train, data.val, stage, entropy_config=ent_cfg, command=command)
    if "blt" in stages:
        stage = presets.stage_config("blt", size, out / "blt", max_minutes=minutes["blt"], **common)
        results["blt"] = T.train_blt(
            data.train, data.val, stage, entropy_dir=out / "entropy", blt_config=blt_cfg, command=command
        )
    if "baseline" in stages:
        blt_seconds = results.get("blt", {}).get("train_seconds")
        base_minutes = blt_seconds / 60 if blt_seconds else minutes["blt"]
        stage = presets.stage_config("baseline", size, out / "baseline", max_minutes=base_minutes, **common)
        results["baseline"] = T.train_baseline(data.train, data.val, stage, blt_dir=out / "blt", command=command)
    results["seconds"] = time.time() - t0
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def eval_bpb_command(
    cfg: BpbEvalConfig, *, sources: Sequence[str | Path] | None = None, collection: Any = None
) -> dict[str, Any]:
    """`shvayambhu eval bpb`: the heldout BPB table as a dict (rows, summary, markdown). A heldout response
    longer than the trained ones would push its exemplars out of the context: they are clipped as trained.
    """
    from blt.checkpoint import load_checkpoint  # lazy: loads mlx

    checkpoint, baseline = cfg.checkpoint, cfg.baseline
    blt_path = _best(checkpoint)
    blt = load_checkpoint(blt_path)
    if blt.kind != "blt":
        raise UsageError(f"{blt_path} holds a {blt.kind} checkpoint; give the BLT's (--baseline for the other)")
    if baseline is None and (Path(checkpoint) / "baseline" / "best").exists():
        baseline = Path(checkpoint) / "baseline"
    base = load_checkpoint(_best(baseline)) if baseline else None
    trained = (blt.metrics.get("train_config") or {}).get("data") or {}
    k = cfg.k if cfg.k is not None else int(trained.get("max_exemplars", 4))
    data = load_data(
        sources=sources,
        collection=collection,
        k=k,
        heldout_fraction=cfg.heldout_fraction,
        seed=cfg.seed,
        embedding_model=cfg.embedding_model,
    )
    held = data.heldout[: cfg.max_records] if cfg.max_records else data.heldout
    response_bytes = cfg.response_bytes or trained.get("response_bytes")
    if response_bytes:
        held = [clip_response(x, response_bytes) for x in held]
    if not held:
        raise TrainingError("no heldout records: mark some with split=heldout or pass heldout_fraction > 0")
    report = bpb_report(
        heldout=held,
        train=data.train + data.val,
        max_len=int(blt.config.max_bytes) + 1,
        blt=blt,
        baseline=base,
        batch_size=cfg.batch_size,
        max_exemplars=k,
        exemplar_bytes=trained.get("exemplar_bytes"),
        compressors=cfg.compressors,
    )
    report.update(
        {
            "data": data.info,
            "checkpoint": str(blt_path),
            "baseline_checkpoint": str(_best(baseline)) if baseline else None,
            "response_bytes": response_bytes,
        }
    )
    return report


def _best(path: str | Path) -> Path:
    """A checkpoint folder itself, else its best/ (a stage folder), else blt/best (a run folder)."""
    p = Path(path)
    for cand in (p, p / "best", p / "blt" / "best"):
        if (cand / "config.json").exists():
            return cand
    raise TrainingError(f"no checkpoint in {p} (nor in {p / 'best'} or {p / 'blt' / 'best'})")
