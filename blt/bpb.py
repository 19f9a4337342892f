"""Bits per byte: of our models on response bytes, and of gzip/bzip2/xz as conditional compressors.

BPB = cross-entropy in nats / (ln 2 * bytes). Model figures count only the masked (response + EOS) bytes.
Compressor figures are conditional on the training text: (C(train + heldout) - C(train)) * 8 / heldout bytes.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blt.data import EVAL_FORMAT, Example, Sample, build_example, eval_batches, eval_examples
from blt.tokens import EOS, PAD, decode

LN2 = math.log(2.0)

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip -9": lambda b: gzip.compress(b, compresslevel=9, mtime=0),
    "bzip2 -9": lambda b: bz2.compress(b, compresslevel=9),
    "xz -9": lambda b: lzma.compress(b, preset=9),
}


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """Cross-entropy in nats over n_bytes bytes, as bits per byte."""
    return nats / (LN2 * n_bytes) if n_bytes else float("nan")


def compressor_bpb(context: bytes, target: bytes, compress: str | Callable[[bytes], bytes] = "xz -9") -> float:
    """Bits per byte a compressor spends on `target` once it has seen `context`."""
    fn = COMPRESSORS[compress] if isinstance(compress, str) else compress
    if not target:
        return float("nan")
    return (len(fn(context + target)) - len(fn(context))) * 8 / len(target)


def record_text(prompt: str, response: str) -> bytes:
    """How a record is laid out for the compressors."""
    return f"{prompt}\n{response}\n\n".encode()


def compressor_table(
    train: Sequence[tuple[str, str]], heldout: Sequence[tuple[str, str]], n_bytes: int | None = None
) -> list[dict[str, Any]]:
    """For each compressor: BPB of whole heldout records given the training records, and of heldout responses
    given the training records and the heldout prompts (comparable to the model rows). `n_bytes` overrides
    the response byte count (by default each response plus one for the newline that ends it, like EOS)."""
    ctx = b"".join(record_text(p, r) for p, r in train)
    full = b"".join(record_text(p, r) for p, r in heldout)
    prompts_only = b"".join(record_text(p, "") for p, _ in heldout)
    resp_bytes = n_bytes or sum(len(r.encode()) + 1 for _, r in heldout)
    rows = []
    for name, fn in COMPRESSORS.items():
        c_ctx, c_full, c_prompts = len(fn(ctx)), len(fn(ctx + full)), len(fn(ctx + prompts_only))
        rows.append(
            {
                "name": name,
                "bpb_records": (c_full - c_ctx) * 8 / max(len(full), 1),
                "bpb": (c_full - c_prompts) * 8 / max(resp_bytes, 1),
                "bytes": resp_bytes,
            }
        )
    return rows


# ---- model scoring (mlx imported lazily so that the compressors work without it) ----

StartsFn = Callable[[np.ndarray], np.ndarray]


def make_starts_fn(entropy_model: Any, patcher_cfg: Any) -> StartsFn:
    """tokens [B, T] -> patch starts [B, T] bool, using the frozen entropy model and the patcher config."""
    import mlx.core as mx  # heavy: mlx only for model scoring

    from blt.entropy import entropies  # heavy: imports mlx
    from blt.patching import patch_starts  # heavy: imports mlx

    def starts_fn(tokens: np.ndarray) -> np.ndarray:
        toks = mx.array(tokens, dtype=mx.int32)
        ent = (
            entropies(entropy_model, toks)
            if getattr(patcher_cfg, "kind", "entropy") in ("entropy", "monotonic")
            else None
        )
        st = patch_starts(toks, patcher_cfg, ent)
        return np.array(st).astype(bool)

    return starts_fn


@dataclass
class Score:
    """Summed cross-entropy (nats) over the scored bytes, their count, and patches seen (BLT only)."""

    nats: float = 0.0
    bytes: int = 0
    patches: int = 0
    patch_bytes: int = 0

    @property
    def bpb(self) -> float:
        return bits_per_byte(self.nats, self.bytes)

    @property
    def avg_patch(self) -> float | None:
        return self.patch_bytes / self.patches if self.patches else None

    def to_dict(self) -> dict[str, Any]:
        return {"bpb": self.bpb, "nats": self.nats, "bytes": self.bytes, "avg_patch_bytes": self.avg_patch}


def masked_ce_sum(logits: Any, targets: Any, mask: Any) -> Any:
    """Sum over positions of mask * cross-entropy (nats); logits [B, T, V], targets/mask [B, T]."""
    import mlx.core as mx  # heavy: mlx only for model scoring
    import mlx.nn as nn  # heavy: as above

    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none")
    return (ce * mask).sum()


def score(
    model: Any,
    examples: Sequence[Example],
    *,
    starts_fn: StartsFn | None = None,
    batch_size: int = 8,
    pad_multiple: int = 64,
    all_bytes: bool = False,
) -> Score:
    """Score examples with a model in eval mode; `starts_fn` given means the model is a BLT.

    `all_bytes=True` scores every non-PAD byte (the entropy model's objective) instead of the loss mask.
    """
    import mlx.core as mx  # heavy: mlx only for model scoring

    was_training = getattr(model, "training", False)
    model.eval()
    out = Score()
    for batch in eval_batches(examples, batch_size, pad_multiple):
        x, y = batch.inputs, batch.targets
        m = (y != PAD).astype(np.float32) if all_bytes else batch.target_mask
        if starts_fn is not None:
            st = starts_fn(x)
            logits = model(mx.array(x), mx.array(st))
            valid = x != PAD
            out.patches += int((st & valid).sum())
            out.patch_bytes += int(valid.sum())
        else:
            logits = model(mx.array(x))
        s = masked_ce_sum(logits, mx.array(y), mx.array(m))
        out.nats += float(s.item())
        out.bytes += int(m.sum())
    if was_training:
        model.train()
    return out


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The BPB table in Markdown."""
    lines = ["| model | bits/byte | bytes | avg patch (bytes) | note |", "|---|---:|---:|---:|---|"]
    for r in rows:
        patch = f"{r['avg_patch_bytes']:.2f}" if r.get("avg_patch_bytes") else "-"
        bpb = f"{r['bpb']:.4f}" if r.get("bpb") is not None else "-"
        lines.append(f"| {r['name']} | {bpb} | {r.get('bytes', '-')} | {patch} | {r.get('note', '')} |")
    return "\n".join(lines)


def bpb_report(
    *,
    heldout: Sequence[Any],
    train: Sequence[Any],
    max_len: int,
    blt: Any = None,
    baseline: Any = None,
    batch_size: int = 8,
    max_exemplars: int | None = None,
    exemplar_bytes: int | None = None,
    compressors: bool = True,
) -> dict[str, Any]:
    """The `shvayambhu eval bpb` table on heldout samples (blt.data.Sample, exemplars already retrieved).

    `blt` and `baseline` are loaded checkpoints (blt.checkpoint.Checkpoint) or None. Every row scores the
    same bytes: the response bytes that fit in max_len (plus EOS, or the newline that ends a record for the
    compressors).
    """
    rows: list[dict[str, Any]] = []
    with_ex = eval_examples(heldout, max_len, True, max_exemplars=max_exemplars, exemplar_bytes=exemplar_bytes)
    without = eval_examples(heldout, max_len, False)
    if blt is not None:
        sf = make_starts_fn(blt.entropy_model, blt.config.patcher)
        rows.append(
            {
                "name": "BLT + retrieval",
                **score(blt.model, with_ex, starts_fn=sf, batch_size=batch_size).to_dict(),
            }
        )
        rows.append(
            {
                "name": "BLT, no retrieval",
                **score(blt.model, without, starts_fn=sf, batch_size=batch_size).to_dict(),
            }
        )
    if baseline is not None:
        rows.append(
            {
                "name": "byte transformer + retrieval",
                **score(baseline.model, with_ex, batch_size=batch_size).to_dict(),
            }
        )
        rows.append(
            {
                "name": "byte transformer, no retrieval",
                **score(baseline.model, without, batch_size=batch_size).to_dict(),
            }
        )
    # the response bytes that the models score (a response longer than the context is cut)
    scored = [
        decode(t for t, m in zip(e.tokens, e.mask, strict=True) if m and t != EOS).decode("utf-8", "replace")
        for e in with_ex
    ]
    context_bytes = [len(a.tokens) - len(b.tokens) for a, b in zip(with_ex, without, strict=True)]
    if compressors:
        for r in compressor_table(
            [(s.prompt, s.response) for s in train],
            [(s.prompt, resp) for s, resp in zip(heldout, scored, strict=True)],
            n_bytes=sum(e.n_target for e in with_ex),
        ):
            rows.append(
                {
                    "name": r["name"],
                    "bpb": r["bpb"],
                    "bytes": r["bytes"],
                    "avg_patch_bytes": None,
                    "note": f"responses given train+prompts; whole records {r['bpb_records']:.4f}",
                }
            )
    by = {r["name"]: r["bpb"] for r in rows}
    summary = {}
    if "BLT + retrieval" in by:
        summary["retrieval_ratio"] = by["BLT + retrieval"] / by["BLT, no retrieval"]
        if "xz -9" in by:
            summary["blt_vs_xz"] = by["BLT + retrieval"] / by["xz -9"]
    if "BLT + retrieval" in by and "byte transformer + retrieval" in by:
        summary["blt_vs_baseline"] = by["BLT + retrieval"] / by["byte transformer + retrieval"]
    return {
        "rows": rows,
        "summary": summary,
        "heldout_records": len(heldout),
        "exemplar_bytes_in_context": sum(context_bytes) / max(len(context_bytes), 1),
        "train_records": len(train),
        "markdown": markdown_table(rows),
    }


def response_bpb(
    prompt: str,
    response: str,
    *,
    history: Any = None,
    model: str | None = None,
    exemplars: Sequence[tuple[str, str]] = (),
) -> float:
    """Bits per byte of `response` after `prompt` (and `exemplars`) under a checkpoint [the shipped one].

    `history` is accepted for the evaluation harness's signature; the byte model was not trained on turns.
    """
    from blt.checkpoint import DEFAULT_CHECKPOINT, cached_checkpoint  # heavy: imports mlx

    ck = cached_checkpoint(model or DEFAULT_CHECKPOINT)
    ex = build_example(Sample(prompt, response, list(exemplars)), fmt=EVAL_FORMAT, max_len=ck.config.max_bytes + 1)
    starts_fn = make_starts_fn(ck.entropy_model, ck.config.patcher) if ck.kind == "blt" else None
    return score(ck.model, [ex], starts_fn=starts_fn, batch_size=1).bpb
