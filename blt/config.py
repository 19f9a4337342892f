"""Plain dataclass configs for the entropy model, the patcher, the BLT and the byte-transformer baseline.

Every config round-trips through ``to_dict``/``from_dict`` (JSON-safe), and ``from_dict`` rejects unknown or
ill-typed keys with a message naming them, so a stale or hand-edited checkpoint config fails loudly.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from blt.errors import ConfigError
from blt.tokens import VOCAB_SIZE

PATCHER_KINDS = ("entropy", "monotonic", "space", "static")
MAX_CONTEXT_BYTES = 1 << 15  # 32 KiB: 8x the largest context DESIGN.md plans (max_bytes, attention windows)
MAX_PATCH_LEN = 1024

C = TypeVar("C", bound="_Config")


def _type_ok(value: Any, tp: Any) -> bool:
    """True when ``value`` fits the annotation ``tp`` (int, float, str, bool, Optional of those)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


class _Config:
    """Shared ``to_dict``/``from_dict`` for the dataclass configs below."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}: expected a dict, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            tp = hints[name]
            if isinstance(tp, type) and issubclass(tp, _Config):
                value = tp.from_dict(value)
            elif not _type_ok(value, tp):
                raise ConfigError(f"{cls.__name__}.{name}: {value!r} is not a valid {tp}")
            elif tp is float:
                value = float(value)
            kwargs[name] = value
        return cls(**kwargs)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_heads(owner: str, dim: int, heads: int) -> None:
    _check(dim > 0 and heads > 0, f"{owner}: dim and heads must be positive")
    _check(dim % heads == 0, f"{owner}: dim {dim} is not divisible by {heads} heads")
    _check((dim // heads) % 2 == 0, f"{owner}: head dim {dim // heads} must be even for RoPE")


@dataclass
class EntropyConfig(_Config):
    """Small causal byte LM whose next-byte entropy decides patch boundaries (sliding-window attention)."""

    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    window: int = 128
    mlp_mult: int = 4
    vocab_size: int = VOCAB_SIZE
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        _check_heads("EntropyConfig", self.dim, self.n_heads)
        _check(self.n_layers >= 1 and self.window >= 1, "EntropyConfig: n_layers and window must be >= 1")
        _check(self.window <= MAX_CONTEXT_BYTES, f"EntropyConfig.window must be <= {MAX_CONTEXT_BYTES}")
        _check(self.vocab_size == VOCAB_SIZE, f"EntropyConfig: vocab_size must be {VOCAB_SIZE}")


@dataclass
class PatcherConfig(_Config):
    """How bytes are grouped into patches.

    entropy: p+1 opens a patch when H(p) > threshold; monotonic: when H(p) - H(p-1) > threshold;
    space: a patch opens after a space-like byte (at the first non-space-like byte); static: every
    ``static_size`` bytes. All kinds cap patches at ``max_patch_len`` bytes (this is also the model's
    pooling width). BOS and SEP are always patches by themselves.
    """

    kind: str = "entropy"
    threshold: float = 1.335
    max_patch_len: int = 16
    static_size: int = 4

    def __post_init__(self) -> None:
        _check(self.kind in PATCHER_KINDS, f"PatcherConfig.kind: {self.kind!r} is not one of {PATCHER_KINDS}")
        _check(1 <= self.max_patch_len <= MAX_PATCH_LEN, f"PatcherConfig.max_patch_len must be in [1, {MAX_PATCH_LEN}]")
        _check(
            1 <= self.static_size <= self.max_patch_len,
            f"PatcherConfig.static_size must be in [1, max_patch_len={self.max_patch_len}]",
        )

    @property
    def needs_entropy(self) -> bool:
        return self.kind in ("entropy", "monotonic")


@dataclass
class BLTConfig(_Config):
    """Byte Latent Transformer: local encoder -> global transformer over patches -> local decoder.

    Defaults are the CPU-sized starting point of DESIGN.md (a few million compute parameters).
    """

    vocab_size: int = VOCAB_SIZE
    max_bytes: int = 2048  # training context in bytes
    # hashed n-gram embeddings: one table of hash_rows rows for each n in [ngram_min, ngram_max]
    ngram_min: int = 3
    ngram_max: int = 6
    hash_rows: int = 16384
    # copy features (blt.copying): the byte after the last earlier match of the short / long n-byte context;
    # 0 turns one off
    copy_short: int = 4
    copy_long: int = 8
    # local encoder (bytes)
    enc_dim: int = 256
    enc_layers: int = 1
    enc_heads: int = 4
    local_window: int = 128  # sliding attention window of the local encoder and decoder, in bytes
    # global transformer (patches)
    global_dim: int = 384
    global_layers: int = 4
    global_heads: int = 6
    # local decoder (bytes)
    dec_dim: int = 256
    dec_layers: int = 2
    dec_heads: int = 4
    cross_k: int = 2  # key/value slots made from each global patch output for the decoder's cross-attention
    mlp_mult: int = 4
    dropout: float = 0.0
    rope_base: float = 10000.0
    patcher: PatcherConfig = field(default_factory=PatcherConfig)
    entropy: EntropyConfig = field(default_factory=EntropyConfig)

    @property
    def copy_ngrams(self) -> tuple[int, ...]:
        return tuple(n for n in (self.copy_short, self.copy_long) if n > 0)

    def __post_init__(self) -> None:
        _check(self.vocab_size == VOCAB_SIZE, f"BLTConfig: vocab_size must be {VOCAB_SIZE}")
        _check(
            1 <= self.ngram_min <= self.ngram_max <= 16,
            "BLTConfig: need 1 <= ngram_min <= ngram_max <= 16",
        )
        _check(1 <= self.hash_rows <= 4_194_301, "BLTConfig: hash_rows must be in [1, 4194301]")
        _check(
            0 <= self.copy_short <= 64 and 0 <= self.copy_long <= 64, "BLTConfig: copy_short/long must be in [0, 64]"
        )
        _check_heads("BLTConfig encoder", self.enc_dim, self.enc_heads)
        _check_heads("BLTConfig global", self.global_dim, self.global_heads)
        _check_heads("BLTConfig decoder", self.dec_dim, self.dec_heads)
        _check(
            self.global_layers >= 1 and self.enc_layers >= 0 and self.dec_layers >= 1,
            "BLTConfig: need global_layers >= 1, enc_layers >= 0, dec_layers >= 1",
        )
        _check(
            self.local_window >= 1 and self.cross_k >= 1 and self.max_bytes >= 1,
            "BLTConfig: local_window, cross_k and max_bytes must be >= 1",
        )
        _check(
            self.max_bytes <= MAX_CONTEXT_BYTES and self.local_window <= MAX_CONTEXT_BYTES,
            f"BLTConfig: max_bytes and local_window must be <= {MAX_CONTEXT_BYTES}",
        )
        _check(0.0 <= self.dropout < 1.0, "BLTConfig.dropout must be in [0, 1)")


@dataclass
class BaselineConfig(_Config):
    """Plain causal byte transformer, the comparison point for the BLT."""

    dim: int = 384
    n_layers: int = 6
    n_heads: int = 6
    dropout: float = 0.0
    max_bytes: int = 2048
    window: int | None = None  # None: full causal attention
    mlp_mult: int = 4
    vocab_size: int = VOCAB_SIZE
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        _check_heads("BaselineConfig", self.dim, self.n_heads)
        _check(self.n_layers >= 1 and self.max_bytes >= 1, "BaselineConfig: need n_layers, max_bytes >= 1")
        _check(self.max_bytes <= MAX_CONTEXT_BYTES, f"BaselineConfig.max_bytes must be <= {MAX_CONTEXT_BYTES}")
        _check(self.window is None or self.window >= 1, "BaselineConfig.window must be None or >= 1")
        _check(0.0 <= self.dropout < 1.0, "BaselineConfig.dropout must be in [0, 1)")
        _check(self.vocab_size == VOCAB_SIZE, f"BaselineConfig: vocab_size must be {VOCAB_SIZE}")
