"""What every command shares: the invocation's settings, the assistant, JSON output, option types."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rag.config import Settings, load_settings

if TYPE_CHECKING:
    from rag.api import Shvayambhu

_state: dict[str, Any] = {}


def settings(**section_overrides: Any) -> Settings:
    """The settings of this invocation: global flags plus the command's own (`section={field: value}`)."""
    overrides: dict[str, Any] = {k: dict(v) for k, v in _state.get("overrides", {}).items()}
    for key, value in section_overrides.items():
        if isinstance(value, dict):
            clean = {k: v for k, v in value.items() if v is not None}
            if clean:
                overrides.setdefault(key, {}).update(clean)
        elif value is not None:
            overrides[key] = value
    return load_settings(_state.get("config"), overrides)


def assistant(**section_overrides: Any) -> Shvayambhu:
    """The assistant with this invocation's settings."""
    from rag.api import Shvayambhu  # lazy: chromadb and the embedding stack load only for commands that use them

    return Shvayambhu(settings(**section_overrides))


def answering_assistant(st: Settings, model: str | None = None) -> Shvayambhu:
    """The assistant for `ask`/`chat` in this process: the model (`st.backend`, `model`) loads in a thread from
    the start, while chromadb and the rest of the API import here (reading its weights lets go of the GIL), and
    the store, embedder and lexical index load in another while the caller waits for the model."""
    loaded: dict[str, Any] = {}
    loader = threading.Thread(target=_load_backend, args=(st, model, loaded), name="shvayambhu-model", daemon=True)
    loader.start()
    from rag.api import Shvayambhu  # lazy: chromadb and the embedding stack load only for commands that use them

    a = Shvayambhu(st)
    threading.Thread(target=_prepare_retrieval, args=(a,), name="shvayambhu-warm", daemon=True).start()
    loader.join()
    if "backend" in loaded:
        a.adopt_backend(loaded["backend"], model)
    return a  # a model that failed to load fails again, and is reported, where the answer asks for it


def _load_backend(st: Settings, model: str | None, out: dict[str, Any]) -> None:
    try:
        from blt.blas import enable_openblas

        enable_openblas(verbose=False)  # before this thread imports mlx
        from rag.backends.select import select_backend
        from rag.consciousness.prompt import keep_head

        out["backend"] = select_backend(st, st.backend, model)
    except Exception:  # noqa: BLE001 - the answer path loads it again and reports what went wrong
        return
    try:
        keep_head(out["backend"].profile)  # the prompt head's keys and values: from disk after the first run
    except Exception:  # noqa: BLE001 - only a head not read ahead: the prefill computes it
        pass


def _prepare_retrieval(a: Shvayambhu) -> None:
    try:
        corpus = a.corpus()
        a.embedder  # noqa: B018 - loads the embedding model
        if corpus is not None and a.settings.retrieval.mode != "dense":
            a.lexical(corpus)
    except Exception:  # noqa: BLE001 - the answer path meets the same error and reports it
        pass


def emit_json(obj: Any) -> None:
    """One JSON document on stdout."""
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def clip(text: str, n: int = 160) -> str:
    """`text` on one line, at most `n` characters."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


BACKENDS = ("auto", "ollama", "mlx", "blt")
BACKEND_HELP = (
    "auto (the default: Ollama when its server answers, else the MLX model when installed, else the BLT), "
    "ollama, mlx or blt."
)
BackendOpt = Annotated[str | None, typer.Option("--backend", help=BACKEND_HELP)]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="Ollama model name; MLX model (.gguf, mlx-lm folder or cached HF repo id); or BLT checkpoint."
    ),
]
SessionOpt = Annotated[str | None, typer.Option("--session", "-s", help="Memory session ('default').")]
HostOpt = Annotated[str | None, typer.Option("--ollama-host", help="Ollama URL [$OLLAMA_HOST or 127.0.0.1:11434].")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for the backend [300].")]
ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode", help="dense, hybrid (BM25 fused with the embeddings) or lexical [[retrieval] mode: hybrid]."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def global_options(
    config: Annotated[Path | None, typer.Option(help="TOML settings file.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (embedded Chroma, memories) [$SHVAYAMBHU_HOME].")
    ] = None,
    chroma_host: Annotated[str | None, typer.Option(help="Use a `chroma run` server at this host.")] = None,
    chroma_port: Annotated[int | None, typer.Option(help="Port of the Chroma server.")] = None,
    collection: Annotated[str | None, typer.Option(help="Corpus collection name [corpus].")] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="sentence-transformers model name or path [all-MiniLM-L6-v2, packaged]."),
    ] = None,
    embed: Annotated[str | None, typer.Option(help="What is embedded for a pair: prompt, response or both.")] = None,
    embedding_precision: Annotated[
        str | None,
        typer.Option(help="auto, fp32 or int8 [auto: the collection's own precision, int8 for a new one]."),
    ] = None,
) -> None:
    """Options that come before the command and apply to every command."""
    _state["config"] = config
    _state["overrides"] = {
        "store": {
            k: v
            for k, v in {
                "data_dir": str(data_dir) if data_dir else None,
                "chroma_host": chroma_host,
                "chroma_port": chroma_port,
                "collection": collection,
            }.items()
            if v is not None
        },
        "embedding": {
            k: v
            for k, v in {"model": embedding_model, "embed_field": embed, "precision": embedding_precision}.items()
            if v is not None
        },
    }


def corpus_source(paths: list[Path] | None) -> dict[str, Any]:
    """Files when given, else the ingested corpus collection (for `train` and `eval bpb`)."""
    if paths:
        return {"sources": [str(p) for p in paths]}
    return {"collection": assistant().collection()}


def found_by(hit: Any) -> str:
    """Which retriever found a hit, e.g. " (dense #2, lexical #1, fused 0.91)"; "" for a plain dense search."""
    dense, lexical = getattr(hit, "dense_rank", None), getattr(hit, "lexical_rank", None)
    if lexical is None and getattr(hit, "fused_score", None) in (None, getattr(hit, "score", None)):
        return ""
    parts = [f"dense #{dense}" if dense else "dense -", f"lexical #{lexical}" if lexical else "lexical -"]
    return f" ({', '.join(parts)}, fused {hit.fused_score:.3f})"
