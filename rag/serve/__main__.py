"""`python -m rag.serve --host 127.0.0.1 --port 8765 --api-key KEY` (until `shvayambhu serve` exists)."""

from __future__ import annotations

import argparse
import sys

from index.errors import ShvayambhuError
from rag.serve.options import KEY_ENV, ServeOptions


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rag.serve", description="Serve Shvayambhu over HTTP.")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (beyond loopback needs a key)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--api-key", default=None, help=f"require `Authorization: Bearer KEY` (or set {KEY_ENV})")
    ap.add_argument("--config", default=None, help="a shvayambhu TOML settings file")
    ap.add_argument("--backend", default=None, help="ollama, blt, mlx or auto (default: the settings')")
    ap.add_argument("--queue-depth", type=int, default=ServeOptions.queue_depth)
    ap.add_argument("--max-upload-mb", type=float, default=ServeOptions.max_upload_bytes / 2**20)
    ap.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin (repeatable)")
    ap.add_argument("--log-level", default="info", help="uvicorn's: warning hides the access log")
    args = ap.parse_args(argv)
    try:
        from rag.config import load_settings
        from rag.serve.runner import run

        settings = load_settings(args.config, overrides={"backend": args.backend})
        opts = ServeOptions(
            queue_depth=args.queue_depth,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            cors_origins=args.cors_origin,
        )
        run(settings, args.host, args.port, args.api_key, options=opts, log_level=args.log_level)
    except ShvayambhuError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
