"""The `serve` command's body, shared by `shvayambhu serve` (rag.cli.serve) and `python -m rag.serve` (`main`
here, which needs nothing of the CLI). Importing this module does not import FastAPI or uvicorn."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from blt.blas import enable_openblas
from blt.errors import BLTError
from index.errors import ShvayambhuError
from rag.config import Settings, load_settings

EXIT_INTERRUPTED = 130


def section(
    host: str | None = None,
    port: int | None = None,
    queue_depth: int | None = None,
    max_upload_mb: float | None = None,
    cors_origin: list[str] | None = None,
) -> dict[str, Any]:
    """The [serve] settings that the command's flags give (None: the flag was not given)."""
    return {
        "host": host,
        "port": port,
        "queue_depth": queue_depth,
        "max_upload_bytes": int(max_upload_mb * 2**20) if max_upload_mb is not None else None,
        "cors_origins": cors_origin,
    }


def serve(st: Settings, api_key: str | None = None, log_level: str = "info") -> None:
    """Check the store, then serve the assistant over `st` in the foreground until interrupted."""
    from index.store import open_client  # a damaged, read-only or full store: one line, before uvicorn starts
    from rag.serve.options import options_from  # lazy: FastAPI and uvicorn load only when serving
    from rag.serve.runner import run

    open_client(st.data_dir, host=st.store.chroma_host or None, port=st.store.chroma_port)
    run(st, st.serve.host, st.serve.port, api_key, options=options_from(st.serve), log_level=log_level)


def parser() -> argparse.ArgumentParser:
    """`python -m rag.serve`'s flags: those of `shvayambhu serve` (tests/test_backend_contract.py keeps them so)."""
    p = argparse.ArgumentParser(
        prog="python -m rag.serve", description="The same as `shvayambhu serve`: see `shvayambhu serve --help`."
    )
    p.add_argument("--host", help="Address to listen on; beyond loopback an API key is required.")
    p.add_argument("--port", type=int, help="Port [8765].")
    p.add_argument("--api-key", help="Require `Authorization: Bearer KEY` [$SHVAYAMBHU_API_KEY].")
    p.add_argument("--backend", help="auto, ollama, mlx or blt.")
    p.add_argument("--queue-depth", type=int, help="Requests waiting per model before 503 [16].")
    p.add_argument("--max-upload-mb", type=float, help="Largest ingest upload in MiB [64].")
    p.add_argument("--cors-origin", action="append", help="Allow this browser origin (repeatable).")
    p.add_argument("--log-level", default="info", help="uvicorn's log level: warning hides the access log.")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m rag.serve [flags]`: the exit code; a user error is one line on stderr (as the CLI's)."""
    args = parser().parse_args(argv)  # a bad flag: argparse's usage line, exit 2
    enable_openblas(verbose=False)  # before anything imports mlx
    try:
        flags = section(args.host, args.port, args.queue_depth, args.max_upload_mb, args.cors_origin)
        overrides: dict[str, Any] = {"serve": {k: v for k, v in flags.items() if v is not None}}
        if args.backend is not None:
            overrides["backend"] = args.backend
        serve(load_settings(None, overrides), args.api_key, args.log_level)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ShvayambhuError, BLTError) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code if isinstance(e, ShvayambhuError) else ShvayambhuError.exit_code
    return 0
