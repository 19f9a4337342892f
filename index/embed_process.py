"""Embedding in a child process, so that a long ingest's Chroma writes run beside it instead of between batches.

Chroma's local client holds the GIL for the whole of each write (a thread that wakes every millisecond woke 21
times in 9.6 s of upserts), so an embedding thread in the same process stalls until each write ends. A child
process has its own GIL: on 2 cores a 10,000-record ingest went from 0.71x to ~0.9x of the embed-only time.
The two speak over a socket pair with `multiprocessing.connection` framing: JSON texts in, raw float32 vectors
out (no pickle). The child exits when the parent closes the socket or dies.

    python -m index.embed_process FD MODEL PRECISION    (started by EmbedProcess, not by hand)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

import numpy as np

from index.embed import Embedder, EmbeddingError

MIN_TEXTS = 2000  # below this the child's start-up (0.4-0.8 s: imports, loading the graph) is not won back
START_TIMEOUT = 120.0  # seconds for the child to load the model (a first run may export the ONNX graph)


class EmbedProcess:
    """A child process running the same ONNX model as ``embedder``; ``submit`` queues texts, ``result`` returns
    their vectors in submission order. Use as a context manager; any failure in the child raises EmbeddingError."""

    def __init__(self, embedder: Embedder):
        if embedder.runtime != "onnx":
            raise EmbeddingError("a separate embedding process needs the ONNX runtime")
        self.dim = embedder.dim
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        cmd = [sys.executable, "-m", "index.embed_process", str(theirs.fileno()), embedder.name, embedder.precision]
        self._proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._pending: list[int] = []
        if not self._conn.poll(START_TIMEOUT):
            self.close()
            raise EmbeddingError(f"the embedding process did not start within {START_TIMEOUT:.0f} s")
        self._receive()  # "ready", or the child's error

    def submit(self, texts: list[str], batch_size: int = 64) -> None:
        self._conn.send_bytes(json.dumps({"texts": texts, "batch_size": batch_size}).encode())
        self._pending.append(len(texts))

    def result(self) -> np.ndarray:
        """The vectors of the oldest submitted texts: shape (len(texts), dim), L2-normalised float32."""
        n = self._pending.pop(0)
        data = self._receive()
        if len(data) != n * self.dim * 4:
            raise EmbeddingError(f"the embedding process sent {len(data)} bytes for {n} texts")
        return np.frombuffer(data, dtype=np.float32).reshape(n, self.dim)

    def _receive(self) -> bytes:
        try:
            msg = self._conn.recv_bytes()
        except (EOFError, OSError) as e:
            code = self._proc.poll()
            raise EmbeddingError(f"the embedding process ended unexpectedly (exit code {code})") from e
        kind, body = msg[:1], msg[1:]
        if kind == b"E":
            raise EmbeddingError(f"the embedding process failed: {body.decode('utf-8', 'replace')}")
        return body

    def close(self) -> None:
        """Close the socket (the child exits); a child still holding submitted work is stopped at once."""
        self._conn.close()
        if self._pending:
            self._proc.kill()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> EmbedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Connection, model: str, precision: str) -> None:
    """The child: load the model, then embed each request until the parent goes away."""
    try:
        embedder = Embedder(model, runtime="onnx", precision=precision)
    except Exception as e:  # reported to the parent, which raises it
        conn.send_bytes(b"E" + f"{e.__class__.__name__}: {e}".encode())
        return
    conn.send_bytes(b"R")
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            vectors = embedder.embed(request["texts"], batch_size=request["batch_size"])
            reply = b"V" + np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        except Exception as e:  # reported to the parent, which raises it
            reply = b"E" + f"{e.__class__.__name__}: {e}".encode()
        try:
            conn.send_bytes(reply)
        except OSError:
            return


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes the socket, and we exit
    fd, model_name, precision_name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    _serve(Connection(fd), model_name, precision_name)
