"""Training examples for the byte model: `BOS [exemplars] SEP prompt SEP response EOS`, loss on the response.

Exemplars are (prompt, response) pairs given most relevant first; the exemplar block is laid out in one of
several text formats (augmentation), least relevant first so the best one sits next to the prompt and
left-truncation drops the least relevant bytes first. Nothing here knows where exemplars come from.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from blt.errors import LayoutError
from blt.tokens import BOS, EOS, PAD, SEP, encode

# name -> template of one exemplar; {p} and {r} are the prompt and response
FORMATS: dict[str, str] = {
    "qa": "Q: {p}\nA: {r}\n\n",
    "markdown": "### Prompt\n{p}\n### Response\n{r}\n\n",
    "chat": "User: {p}\nAssistant: {r}\n\n",
    "plain": "{p}\n{r}\n\n",
}
EVAL_FORMAT = "qa"


def _markers() -> tuple[str, ...]:
    """The text that opens an entry or a field in some format, at the start of a line ("Q: ", "A: ", ...)."""
    out = set()
    for tmpl in FORMATS.values():
        head, _, rest = tmpl.partition("{p}")
        mid = rest.partition("{r}")[0]
        out |= {head.strip("\n"), mid.strip("\n")}
    return tuple(sorted(out - {""}))


MARKERS = _markers()
_MARKER_ALT = "|".join(re.escape(m) for m in MARKERS)
_LINE_START = {False: r"(?<=\n)", True: r"(?:^|(?<=\n))"}  # True: the record's first line counts too
_ESCAPE = {first: re.compile(_LINE_START[first] + f"( *)(?={_MARKER_ALT})") for first in (False, True)}
_UNESCAPE = {first: re.compile(_LINE_START[first] + f" ( *)(?={_MARKER_ALT})") for first in (False, True)}


def escape_record(text: str, at_line_start: bool = False) -> str:
    """A record's text with one space added before any line that starts (after spaces) with a layout marker
    (its first line too when the layout puts it at a line start), so that stored text can neither open nor
    forge an exemplar or a field. ``unescape_record`` inverts it. The same in training data and at ask time:
    exemplar_block is the one place records enter the layout."""
    return _ESCAPE[at_line_start].sub(r" \1", text)


def unescape_record(text: str, at_line_start: bool = False) -> str:
    """The record text that ``escape_record`` was given."""
    return _UNESCAPE[at_line_start].sub(r"\1", text)


def _line_starts(fmt: str) -> tuple[bool, bool]:
    """Whether the format puts the prompt / the response at the start of a line."""
    head, _, rest = FORMATS[fmt].partition("{p}")
    return head.endswith("\n") or not head, rest.partition("{r}")[0].endswith("\n")


@dataclass
class Sample:
    """One record to learn or score: its prompt, response and retrieved exemplars (most relevant first)."""

    prompt: str
    response: str
    exemplars: list[tuple[str, str]] = field(default_factory=list)
    id: str = ""
    truncated: bool = False  # the response was cut (clip_response): no EOS is learned or scored after it


@dataclass
class Example:
    """Token ids (BOS first) and a 0/1 loss mask of the same length marking the bytes to predict."""

    tokens: list[int]
    mask: list[int]

    @property
    def n_target(self) -> int:
        return sum(self.mask)


@dataclass
class DataConfig:
    """How samples become examples: exemplar formats, their count and how often retrieval is dropped."""

    max_len: int = 1025  # tokens in an example, BOS included; inputs are max_len - 1 bytes
    formats: tuple[str, ...] = tuple(FORMATS)
    max_exemplars: int = 4
    drop_exemplars: float = 0.15  # probability of training a sample with no exemplars at all
    vary_count: bool = True  # sometimes use fewer than max_exemplars
    exemplar_bytes: int | None = None  # keep at most this many bytes of each exemplar's response
    response_bytes: int | None = None  # the training responses were clipped to this (recorded for evaluation)
    # Copy warm-up: in epoch e, with probability self_copy * (1 - e / self_copy_epochs), an example's most
    # relevant exemplar is its own response with words dropped. A small model fed only loosely related
    # neighbours learns to ignore them and memorise; this forms the copy path first, then fades out so
    # that later epochs train on true neighbours only.
    self_copy: float = 0.0
    self_copy_epochs: int = 2
    self_copy_word_drop: float = 0.15


def clip_text(text: str, max_bytes: int | None) -> str:
    """The longest prefix of `text` of at most max_bytes UTF-8 bytes (never half a character)."""
    if max_bytes is None:
        return text
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def clip_response(sample: Sample, max_bytes: int) -> Sample:
    """The sample with its own response cut to max_bytes (at a character boundary); exemplars untouched."""
    cut = clip_text(sample.response, max_bytes)
    return replace(sample, response=cut, truncated=sample.truncated or cut != sample.response)


def exemplar_block(
    exemplars: Sequence[tuple[str, str]], fmt: str = EVAL_FORMAT, exemplar_bytes: int | None = None
) -> bytes:
    """The exemplar text, least relevant first (so the most relevant is next to the prompt); each record's
    text is escaped (escape_record) after clipping, so only the layout itself opens entries and fields."""
    tmpl, (p_first, r_first) = FORMATS[fmt], _line_starts(fmt)
    return "".join(
        tmpl.format(p=escape_record(p, p_first), r=escape_record(clip_text(r, exemplar_bytes), r_first))
        for p, r in reversed(list(exemplars))
    ).encode("utf-8")


def trim_block(block: bytes, room: int) -> bytes:
    """The end of an exemplar block in at most `room` bytes (the least relevant text is cut first).

    The cut moves forward to the next line start, so the block cannot begin in the middle of a record's line
    with text that looks like a marker (records hold none at line starts); with no line start to move to, it
    moves to the next UTF-8 character instead."""
    if len(block) <= room:
        return block
    if room <= 0:
        return b""
    cut = block[len(block) - room :]
    if block[len(block) - room - 1] == 0x0A:  # already at a line start
        return cut
    nl = cut.find(b"\n")
    if nl >= 0:
        return cut[nl + 1 :]
    return cut[next((i for i, b in enumerate(cut) if b & 0xC0 != 0x80), len(cut)) :]


def exemplar_responses(block: str, fmt: str = EVAL_FORMAT) -> list[str]:
    """The responses of an exemplar block laid out by `exemplar_block` (same order, unescaped), for copying
    from. Exact for formats whose entries begin with a marker (all but `plain`): no record can hold a marker
    at the start of a line, so entries and fields split only where the layout put them."""
    head, _, rest = FORMATS[fmt].partition("{p}")
    mid, _, tail = rest.partition("{r}")
    h = re.escape(head)
    entry = re.compile(f"(?:^|(?<=\\n)){h}.*?{re.escape(mid)}(.*?){re.escape(tail)}(?={h}|\\Z)", re.S)
    r_first = _line_starts(fmt)[1]
    return [unescape_record(r, r_first) for r in entry.findall(block)]


def context_tokens(
    prompt: str,
    exemplars: Sequence[tuple[str, str]] = (),
    fmt: str = EVAL_FORMAT,
    max_len: int | None = None,
    reserve: int = 0,
    exemplar_bytes: int | None = None,
) -> list[int]:
    """`BOS [exemplars] SEP prompt SEP`: what generation conditions on; `reserve` leaves room for output."""
    ex = build_example(
        Sample(prompt, "", list(exemplars)),
        fmt=fmt,
        max_len=None if max_len is None else max_len - reserve,
        exemplar_bytes=exemplar_bytes,
    )
    return ex.tokens[:-1]  # drop the EOS of the empty response


def build_example(
    sample: Sample,
    fmt: str = EVAL_FORMAT,
    max_len: int | None = 1025,
    n_exemplars: int | None = None,
    exemplar_bytes: int | None = None,
) -> Example:
    """Lay out one sample and mask its response bytes and EOS; fit it into max_len tokens.

    Order of truncation: exemplar bytes from the left (least relevant first), then the prompt (its end),
    then the response from the right (its start is always kept; EOS only when the response is whole).
    """
    exemplars = sample.exemplars if n_exemplars is None else sample.exemplars[:n_exemplars]
    block = exemplar_block(exemplars, fmt, exemplar_bytes) if exemplars else b""
    prompt = sample.prompt.encode("utf-8")
    resp = sample.response.encode("utf-8")
    overhead = 3  # BOS, SEP, SEP
    if max_len is not None:
        if max_len < overhead + 2:
            raise LayoutError(f"max_len={max_len} leaves no room for a response")
        room = max_len - overhead
        need = len(prompt) + len(resp) + 1
        if need > room:  # no room for exemplars; cut the prompt's end, then the response's end
            block = b""
            keep_p = min(len(prompt), max(room // 4, room - len(resp) - 1))
            prompt = prompt[:keep_p]
            room_r = room - len(prompt)
            if len(resp) + 1 > room_r:
                resp = resp[:room_r]
                tokens = [BOS, *encode(block), SEP, *encode(prompt), SEP, *encode(resp)]
                return Example(tokens, [0] * (len(tokens) - len(resp)) + [1] * len(resp))
        elif len(block) > room - need:
            block = trim_block(block, room - need)
    head = [BOS, *encode(block), SEP, *encode(prompt), SEP]
    body = [*encode(resp)] if sample.truncated else [*encode(resp), EOS]
    return Example(head + body, [0] * len(head) + [1] * len(body))


def self_copy_rate(cfg: DataConfig, epoch: int) -> float:
    """Probability of the copy warm-up exemplar in this epoch (linear decay to 0)."""
    if cfg.self_copy <= 0 or cfg.self_copy_epochs <= 0:
        return 0.0
    return cfg.self_copy * max(0.0, 1.0 - epoch / cfg.self_copy_epochs)


def drop_words(text: str, rate: float, rng: random.Random) -> str:
    """`text` with each space-separated word dropped with probability `rate` (never all of them)."""
    words = text.split(" ")
    kept = [w for w in words if rng.random() >= rate]
    return " ".join(kept or words[:1])


def augment(sample: Sample, seed: int, cfg: DataConfig, epoch: int = 0) -> Example:
    """A training example with a random (seeded) format, exemplar count, retrieval drop-out and, early in
    training, the copy warm-up exemplar (DataConfig.self_copy)."""
    rng = random.Random(seed)
    fmt = rng.choice(cfg.formats)
    k = min(cfg.max_exemplars, len(sample.exemplars))
    if rng.random() < cfg.drop_exemplars:
        k = 0
    elif cfg.vary_count and k > 1:
        k = rng.randint(1, k)
    if k and rng.random() < self_copy_rate(cfg, epoch):
        own = (sample.prompt, drop_words(sample.response, cfg.self_copy_word_drop, rng))
        sample = replace(sample, exemplars=[own, *sample.exemplars])
    return build_example(sample, fmt=fmt, max_len=cfg.max_len, n_exemplars=k, exemplar_bytes=cfg.exemplar_bytes)


def stable_seed(*parts: object) -> int:
    """A seed that is the same in every process (Python's hash() of a str is not)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def sample_key(sample: Sample) -> str:
    return sample.id or f"{sample.prompt}\x1e{sample.response}"


def split_validation(
    samples: Sequence[Sample], fraction: float = 0.05, seed: int = 0, min_val: int = 1
) -> tuple[list[Sample], list[Sample]]:
    """Deterministic train/validation split by a hash of each sample's id (stable as the corpus grows)."""
    if fraction <= 0 or len(samples) < 2:
        return list(samples), []
    scored = sorted(samples, key=lambda s: stable_seed(seed, "val", sample_key(s)))
    n_val = max(min_val, round(fraction * len(samples)))
    n_val = min(n_val, len(samples) - 1)
    val_keys = {sample_key(s) for s in scored[:n_val]}
    train = [s for s in samples if sample_key(s) not in val_keys]
    val = [s for s in samples if sample_key(s) in val_keys]
    return train, val


@dataclass
class Batch:
    """Right-padded int32 tokens [B, L] and float32 mask [B, L]; `index` maps rows to examples."""

    tokens: np.ndarray
    mask: np.ndarray
    index: list[int]

    @property
    def inputs(self) -> np.ndarray:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> np.ndarray:
        return self.tokens[:, 1:]

    @property
    def target_mask(self) -> np.ndarray:
        return self.mask[:, 1:]


def padded_length(n: int, multiple: int, cap: int | None = None) -> int:
    """n rounded up so that n - 1 (the input length) is a multiple of `multiple`; few shapes, few compiles."""
    m = ((max(n - 1, 1) + multiple - 1) // multiple) * multiple + 1
    return m if cap is None else min(m, cap)


def collate(
    examples: Sequence[Example],
    index: Sequence[int] | None = None,
    pad_multiple: int = 64,
    length: int | None = None,
    cap: int | None = None,
) -> Batch:
    """Stack examples with right PAD (mask 0), to `length` or the longest rounded to `pad_multiple`
    (but not past `cap`, the configured example length)."""
    longest = max(len(e.tokens) for e in examples)
    L = length or padded_length(longest, pad_multiple, cap)
    if L < longest:
        raise ValueError(f"batch length {L} < longest example {longest}")
    toks = np.full((len(examples), L), PAD, dtype=np.int32)
    mask = np.zeros((len(examples), L), dtype=np.float32)
    for i, e in enumerate(examples):
        toks[i, : len(e.tokens)] = e.tokens
        mask[i, : len(e.mask)] = e.mask
    return Batch(toks, mask, list(index if index is not None else range(len(examples))))


def batch_order(
    lengths: Sequence[int],
    batch_size: int,
    rng: random.Random | None,
    bucket: int = 50,
    drop_last: bool = False,
) -> list[list[int]]:
    """Batches of indices grouped by similar length (less padding); shuffled when rng is given.

    `drop_last` drops the one short batch (fixed shapes compile once) unless it is the only batch.
    """
    idx = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(idx)
    chunks = [idx[i : i + batch_size * bucket] for i in range(0, len(idx), batch_size * bucket)]
    batches = []
    for ch in chunks:
        ch = sorted(ch, key=lambda i: lengths[i])
        batches += [ch[i : i + batch_size] for i in range(0, len(ch), batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    if rng is not None:
        rng.shuffle(batches)
    return batches


def train_batches(
    samples: Sequence[Sample],
    batch_size: int,
    cfg: DataConfig,
    seed: int = 0,
    pad_multiple: int = 64,
    start: tuple[int, int] = (0, 0),
) -> Iterator[tuple[int, int, Batch]]:
    """Endless (epoch, batch number, batch) stream from `start` = (epoch, batch number), for resuming.

    Each epoch re-augments every sample with the seed (seed, epoch, i), so the stream is reproducible.
    """
    epoch, skip = start
    while True:
        examples = [augment(s, stable_seed(seed, epoch, i), cfg, epoch) for i, s in enumerate(samples)]
        rng = random.Random(stable_seed(seed, "order", epoch))
        order = batch_order([len(e.tokens) for e in examples], batch_size, rng, drop_last=True)
        for j, b in enumerate(order):
            if j >= skip:
                yield epoch, j, collate([examples[i] for i in b], b, pad_multiple, cap=cfg.max_len)
        epoch, skip = epoch + 1, 0


def eval_examples(
    samples: Sequence[Sample],
    max_len: int,
    with_exemplars: bool = True,
    fmt: str = EVAL_FORMAT,
    max_exemplars: int | None = None,
    exemplar_bytes: int | None = None,
) -> list[Example]:
    """Fixed-format examples for validation and BPB: with or without the retrieved exemplars."""
    return [
        build_example(
            s,
            fmt=fmt,
            max_len=max_len,
            n_exemplars=max_exemplars if with_exemplars else 0,
            exemplar_bytes=exemplar_bytes,
        )
        for s in samples
    ]


def eval_batches(examples: Sequence[Example], batch_size: int, pad_multiple: int = 64) -> Iterator[Batch]:
    """Deterministic batches over examples, grouped by length."""
    for b in batch_order([len(e.tokens) for e in examples], batch_size, None):
        yield collate([examples[i] for i in b], b, pad_multiple)
