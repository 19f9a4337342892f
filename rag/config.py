"""All settings in one typed place: defaults here, then a TOML file, then SHVAYAMBHU_* variables, then CLI flags."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from index.defaults import DEFAULT_MODEL  # not index.embed: settings load without numpy
from index.errors import UsageError


class ConfigError(UsageError):
    """A setting has an unknown name or a value of the wrong type; the message names the source."""


@dataclass
class StoreSettings:
    data_dir: str = ""  # empty: $SHVAYAMBHU_HOME or ~/.shvayambhu
    chroma_host: str = ""  # set to use a `chroma run` server instead of the embedded store
    chroma_port: int = 8000
    collection: str = "corpus"


@dataclass
class EmbeddingSettings:
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    runtime: str = "auto"  # auto | onnx | torch: ONNX Runtime gives the same vectors about twice as fast on CPU
    embed_field: str = "prompt"  # prompt | response | both: a question finds exemplars by their questions
    # auto | fp32 | int8: int8 quantises the ONNX graph's weights (2.4x faster on CPUs; cosine to fp32 >= 0.97
    # each, 0.99 mean). A collection records the precision it was built with and refuses the other one for
    # writes; auto embeds at that recorded precision, and at int8 for a new collection.
    precision: str = "auto"


@dataclass
class RetrievalSettings:
    # dense | hybrid | lexical. hybrid fuses BM25 with the embeddings: it finds names, codes and rare words that
    # dense retrieval misses and costs paraphrases almost nothing (bench/RESULTS.md, hybrid retrieval).
    mode: str = "hybrid"
    fusion: str = "convex"  # convex (min-max normalised scores, weight alpha on dense) | rrf (constant rrf_k)
    alpha: float = 0.5
    rrf_k: float = 60.0
    k: int = 4
    min_score: float = 0.0
    mmr: bool = False
    fetch_k: int = 20
    mmr_lambda: float = 0.5
    # Records of this split never ground an answer: they are the evaluation set (empty: use everything).
    exclude_split: str = "heldout"


@dataclass
class OllamaSettings:
    host: str = ""  # empty: $OLLAMA_HOST or http://127.0.0.1:11434
    model: str = "llama3.2"
    timeout: float = 300.0
    keep_alive: str = "5m"
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    num_ctx: int = 4096
    seed: int = -1  # -1: unseeded
    max_tokens: int = 512


@dataclass
class BLTSettings:
    checkpoint: str = ""  # empty: the checkpoint shipped inside the package
    max_bytes: int = 0  # answer length (0: as long as the checkpoint's training responses); the rest of its
    # context holds the exemplars and the question
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repeat_penalty: float = 1.0  # CTRL-style, over the last 64 bytes; distorts letter frequencies
    no_repeat_ngram: int = 12  # the answer never holds the same 12 bytes twice: no loops, copying stays free
    copy_weight: float = 0.5  # mix a copy of the retrieved answers in where the answer matches them; 0: off
    seed: int = 0
    # The BLT can only re-tell what it retrieved: when the layer flags low confidence it says plainly that the
    # corpus has nothing on the question and names the nearest things it holds, instead of decoding word salad.
    abstain: bool = True


@dataclass
class MLXSettings:
    model: str = ""  # empty: the bundled SmolLM2-135M-Instruct; else an mlx-lm folder, a cached HF repo id or a .gguf
    # auto: float32 on the CPU (MLX's CPU 4-bit kernels are single-threaded), the quantized weights on Metal/CUDA
    dtype: str = "auto"
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_tokens: int = 256
    repeat_penalty: float = 1.1
    prompt_tokens: int = 1024  # the workspace's budget in real tokens: a small model is derailed by a long prompt
    # token-level copy of the retrieved answers mixed into the model's distribution (0: off); 0.5 chosen on
    # validation prompts (bench/bench_answer_quality.py --sets validation): 0.3 38.6 chrF, 0.5 and 0.7 45.9
    copy_weight: float = 0.5
    prompt_style: str = "compact"  # compact: one close exemplar (none when confidence is low), short instructions; full
    # a LoRA/DoRA adapter folder written by `shvayambhu finetune` (or mlx-lm's `lora`), applied when the model
    # loads; empty: none
    adapter: str = ""


@dataclass
class SelfModelSettings:
    name: str = "Shvayambhu"
    identity: str = (
        "a local assistant that answers from its own corpus of exemplars and its memory of past conversations"
    )
    values: list[str] = field(
        default_factory=lambda: [
            "be honest, and say plainly when you do not know",
            "ground answers in the retrieved exemplars and memories when they are relevant",
            "be kind and respect the user's autonomy and privacy",
        ]
    )
    style: str = "clear, warm and concise; plain prose, short lists only when they help"


@dataclass
class WorkspaceSettings:
    budget_bytes: int = 6000  # prompt budget for byte-level backends, and the default for Ollama
    budget_tokens: int = 0  # >0: budget Ollama prompts in (estimated) tokens instead of bytes
    recent_turns: int = 4
    # A factoid question (who, when, how many...) whose answer is a phrase of a retrieved document passage is
    # answered with that phrase, quoted from its sentence, whatever the backend; false: the model always writes.
    extractive: bool = True


@dataclass
class MemorySettings:
    enabled: bool = True
    recall_k: int = 4
    recency_weight: float = 1.0
    importance_weight: float = 1.0
    relevance_weight: float = 1.0
    decay_per_hour: float = 0.995
    reflect_every: int = 8
    reflection_size: int = 3
    min_relevance: float = 0.2  # memories less similar than this to the question are not recalled


@dataclass
class MetacognitionSettings:
    # An answer below this confidence is flagged low (and, for a small model, gets no reference: the layer says
    # the documents do not answer it). The confidence's weights are the store's own, fitted by `eval answers
    # --fit-calibration`, else the defaults in rag.consciousness.calibration.
    low_confidence: float = 0.45


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"  # any other address needs an API key (--api-key or SHVAYAMBHU_API_KEY; never in TOML)
    port: int = 8765
    queue_depth: int = 16  # requests waiting per loaded model before 503
    max_question_bytes: int = 32 * 1024
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    # "prefix=KEY" entries: each key sees only the sessions it names, stored as `prefix/name` (keep this file
    # private, or give them as SHVAYAMBHU_SERVE_API_KEYS="alice=K1;bob=K2"). --api-key sees every session.
    api_keys: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # Host names answered besides loopback ones ("*": any)


@dataclass
class Settings:
    backend: str = "auto"  # auto | ollama | mlx | blt
    session: str = "default"
    store: StoreSettings = field(default_factory=StoreSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    ollama: OllamaSettings = field(default_factory=OllamaSettings)
    mlx: MLXSettings = field(default_factory=MLXSettings)
    blt: BLTSettings = field(default_factory=BLTSettings)
    self_model: SelfModelSettings = field(default_factory=SelfModelSettings)
    workspace: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    metacognition: MetacognitionSettings = field(default_factory=MetacognitionSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)

    @property
    def data_dir(self) -> Path:
        return Path(self.store.data_dir).expanduser() if self.store.data_dir else default_data_dir()

    @property
    def ollama_host(self) -> str:
        return self.ollama.host or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The range of every number a setting holds, both ends included: "section.field" -> (lowest, highest). Settings
# are checked against it as they load (a TOML file, SHVAYAMBHU_* variables, flags); a number setting without an
# entry here is a test failure (tests/test_serve_settings.py).
RANGES: dict[str, tuple[float, float]] = {
    "store.chroma_port": (1, 65535),
    "retrieval.alpha": (0.0, 1.0),
    "retrieval.rrf_k": (0.0, 1e6),
    "retrieval.k": (1, 1000),
    "retrieval.min_score": (-1.0, 1.0),
    "retrieval.fetch_k": (1, 10_000),
    "retrieval.mmr_lambda": (0.0, 1.0),
    "ollama.timeout": (0.001, 86_400.0),
    "ollama.temperature": (0.0, 2.0),
    "ollama.top_p": (0.0, 1.0),
    "ollama.top_k": (0, 1000),
    "ollama.repeat_penalty": (0.0, 10.0),
    "ollama.num_ctx": (1, 1 << 20),
    "ollama.seed": (-1, 2**32 - 1),
    "ollama.max_tokens": (-1, 1 << 20),
    "blt.max_bytes": (0, 1 << 20),
    "blt.temperature": (0.0, 2.0),
    "blt.top_k": (0, 1000),
    "blt.top_p": (0.0, 1.0),
    "blt.repeat_penalty": (0.0, 10.0),
    "blt.no_repeat_ngram": (0, 4096),
    "blt.copy_weight": (0.0, 1.0),
    "blt.seed": (0, 2**32 - 1),
    "mlx.temperature": (0.0, 2.0),
    "mlx.top_p": (0.0, 1.0),
    "mlx.top_k": (0, 1 << 20),
    "mlx.seed": (0, 2**32 - 1),
    "mlx.max_tokens": (1, 1 << 20),
    "mlx.repeat_penalty": (0.0, 10.0),
    "mlx.prompt_tokens": (16, 1 << 20),
    "mlx.copy_weight": (0.0, 1.0),
    "workspace.budget_bytes": (1, 1 << 24),
    "workspace.budget_tokens": (0, 1 << 20),
    "workspace.recent_turns": (0, 1000),
    "memory.recall_k": (0, 1000),
    "memory.recency_weight": (0.0, 1000.0),
    "memory.importance_weight": (0.0, 1000.0),
    "memory.relevance_weight": (0.0, 1000.0),
    "memory.decay_per_hour": (0.0, 1.0),
    "memory.reflect_every": (0, 100_000),
    "memory.reflection_size": (1, 1000),
    "memory.min_relevance": (-1.0, 1.0),
    "metacognition.low_confidence": (0.0, 1.0),
    "serve.port": (0, 65535),
    "serve.queue_depth": (1, 100_000),
    "serve.max_question_bytes": (1, 1 << 30),
    "serve.max_body_bytes": (1, 1 << 30),
    "serve.max_upload_bytes": (1, 1 << 40),
}


def check_range(name: str, value: Any, where: str) -> None:
    """Refuse a number outside RANGES[name] (NaN and infinities included), naming the setting and the range."""
    if name not in RANGES or isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high = RANGES[name]
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{where} = {value!r} is out of range: it must be from {_number(low)} to {_number(high)}")


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def default_data_dir() -> Path:
    """`$SHVAYAMBHU_HOME`, else `~/.shvayambhu` (the store's own default; chromadb loads only when asked)."""
    from index.store import default_data_dir as store_default  # lazy: index.store imports chromadb

    return store_default()


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a TOML or environment value to the field's type, or say where it went wrong."""
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ in (int, float):
            if isinstance(value, bool) or (typ is int and isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return typ(value)
        if typ is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
        if origin is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(";") if v.strip()]
            return [str(v) for v in value]
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"{where}: {value!r} is not a valid {getattr(typ, '__name__', typ)}")


def _apply(obj: Any, values: dict[str, Any], where: str, section: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            _apply(current, value, f"{where} [{key}]", f"{key}.")
        else:
            value = _coerce(value, hints[key], f"{where}: {key}")
            check_range(section + key, value, f"{where}: {key}")
            setattr(obj, key, value)


def config_path(explicit: str | Path | None = None) -> Path | None:
    """`--config`, else `$SHVAYAMBHU_CONFIG`, else `<data dir>/config.toml` when it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get("SHVAYAMBHU_CONFIG"):
        return Path(os.environ["SHVAYAMBHU_CONFIG"])
    home = Path(os.environ["SHVAYAMBHU_HOME"]) if os.environ.get("SHVAYAMBHU_HOME") else default_data_dir()
    path = home / "config.toml"
    return path if path.exists() else None


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """SHVAYAMBHU_<SECTION>_<FIELD> (or SHVAYAMBHU_<FIELD> for top-level ones) as a nested dict."""
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    if environ.get("SHVAYAMBHU_HOME"):
        out.setdefault("store", {})["data_dir"] = environ["SHVAYAMBHU_HOME"]
    defaults = Settings()
    sections = [f.name for f in fields(defaults) if dataclasses.is_dataclass(getattr(defaults, f.name))]
    scalars = [f.name for f in fields(defaults) if f.name not in sections]
    for name, value in environ.items():
        if not name.startswith("SHVAYAMBHU_") or name in ("SHVAYAMBHU_HOME", "SHVAYAMBHU_CONFIG"):
            continue
        rest = name[len("SHVAYAMBHU_") :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section:
            out.setdefault(section, {})[rest[len(section) + 1 :]] = value
        elif rest in scalars:
            out[rest] = value
    return out


def load_settings(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Defaults, then the TOML file, then SHVAYAMBHU_* variables, then `overrides` (CLI flags, nested dict)."""
    settings = Settings()
    cfg = config_path(path)
    if cfg is not None:
        if not cfg.exists():
            raise ConfigError(f"config file {cfg} does not exist")
        try:
            data = tomllib.loads(cfg.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{cfg}: invalid TOML: {e}") from e
        _apply(settings, data, str(cfg))
    _apply(settings, env_overrides(environ), "environment")
    if overrides:
        _apply(settings, {k: v for k, v in overrides.items() if v is not None and v != {}}, "command line")
    return settings


def on_fresh_store(settings: Settings, data_dir: str | Path, collection: str) -> Settings:
    """A copy of `settings` on a fresh embedded store in `data_dir` (never the user's store or server), for runs
    that build a throwaway store of their own (the answer benchmark, fine-tuning data)."""
    s = copy.deepcopy(settings)
    s.store.data_dir = str(data_dir)
    s.store.chroma_host = ""
    s.store.collection = collection
    return s
