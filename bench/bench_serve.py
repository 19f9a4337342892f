"""`shvayambhu serve` under load: /v1/search throughput and latency, time to first token through the server
against in-process, and the server's memory.

The server runs as its own process (`python -m rag.serve`) over a fresh store holding the seed corpus, with
the fake Ollama server (tests/ollama_server.py) as the backend, so the figures are the server's own costs.
The in-process peer is `Shvayambhu.stream` on a copy of the same store, measured in the same run,
interleaved. Every server figure (search throughput and latency, time to first token, memory) is of that one
server process, the way users run it; "added by the server" is its time to first token minus the in-process
peer's. Target: the server adds at most 10 ms to time-to-first-token at p50.

    python bench/bench_serve.py [--requests 200] [--ttft 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from ollama_server import ModelBehavior, OllamaServer  # noqa: E402

from ingest.bundled import seed_corpus  # noqa: E402
from rag.api import Shvayambhu  # noqa: E402
from rag.config import load_settings  # noqa: E402

QUERIES = ["immune system", "black holes", "sourdough starter", "how to budget", "photosynthesis", "sleep"]
QUESTION = "How do vaccines train the immune system?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def search_load(url: str, concurrency: int, total: int) -> tuple[float, list[float]]:
    """`total` /v1/search requests from `concurrency` clients: (requests/s, latencies in ms)."""
    lat: list[float] = []
    todo = iter(range(total))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def worker() -> None:
            for i in todo:
                t = time.perf_counter()
                r = await c.post("/v1/search", json={"query": QUERIES[i % len(QUERIES)], "k": 4})
                r.raise_for_status()
                lat.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t0), lat


CLIENT = httpx.Client(timeout=120)  # one client: a new one per request costs an SSL context (tens of ms)


def ttft_server(url: str, session: str) -> float:
    body = {"model": "shvayambhu", "stream": True, "user": session, "messages": [{"role": "user", "content": QUESTION}]}
    t = time.perf_counter()
    with CLIENT.stream("POST", url + "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"content": "' in line and '"content": ""' not in line:
                ms = (time.perf_counter() - t) * 1000
                break
        for _ in lines:  # finish: the answer is remembered as it would be
            pass
    return ms


def ttft_inproc(assistant: Shvayambhu, session: str) -> float:
    t = time.perf_counter()
    stream = assistant.stream(QUESTION, session=session)
    next(stream)
    ms = (time.perf_counter() - t) * 1000
    stream.result()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="search requests per concurrency level")
    ap.add_argument("--ttft", type=int, default=30, help="questions per side for time to first token")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    with OllamaServer({"llama3.2": ModelBehavior(token_delay=0.002)}) as fake:
        overrides = {
            "backend": "ollama",
            "store": {"data_dir": str(tmp / "server")},
            "ollama": {"host": fake.url, "temperature": 0.0, "seed": 7},
        }
        t = time.perf_counter()
        Shvayambhu(load_settings(overrides=overrides, environ={})).ingest(seed_corpus(), progress=False)
        print(f"seed corpus ingested in {time.perf_counter() - t:.1f} s")
        shutil.copytree(tmp / "server", tmp / "inproc")
        local = Shvayambhu(
            load_settings(overrides={**overrides, "store": {"data_dir": str(tmp / "inproc")}}, environ={})
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHVAYAMBHU_", "OLLAMA_"))}
        env.update(
            {
                "SHVAYAMBHU_HOME": str(tmp / "server"),
                "OLLAMA_HOST": fake.url,
                "HF_HUB_OFFLINE": "1",
                "SHVAYAMBHU_OLLAMA_TEMPERATURE": "0",
                "SHVAYAMBHU_OLLAMA_SEED": "7",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": str(REPO),
            }
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rag.serve",
                "--port",
                str(port),
                "--backend",
                "ollama",
                "--queue-depth",
                "64",
                "--log-level",
                "warning",
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the server did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.2)
            httpx.post(url + "/v1/search", json={"query": "warm up"}, timeout=60)
            print(f"server RSS idle: {rss_mb(proc.pid):.0f} MB")

            peak = [0.0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.05):
                    peak[0] = max(peak[0], rss_mb(proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            local.search("warm up")
            inproc = []
            for i in range(args.requests // 2):
                t = time.perf_counter()
                local.search(QUERIES[i % len(QUERIES)], 4)
                inproc.append((time.perf_counter() - t) * 1000)
            print(f"in-process search (peer): p50 {pct(inproc, 0.5):.1f} ms, p95 {pct(inproc, 0.95):.1f} ms")
            for conc in (1, 8, 32):
                rps, lat = asyncio.run(search_load(url, conc, args.requests))
                print(
                    f"/v1/search concurrency {conc:>2}: {rps:6.1f} req/s, p50 {pct(lat, 0.5):6.1f} ms, "
                    f"p95 {pct(lat, 0.95):6.1f} ms"
                )

            server, inp = [], []
            ttft_server(url, "warm")
            ttft_inproc(local, "warm")
            for i in range(args.ttft):  # interleaved, each question in a fresh session on both sides
                server.append(ttft_server(url, f"bench-{i}"))
                inp.append(ttft_inproc(local, f"bench-{i}"))
            p50 = statistics.median
            print(
                f"time to first token p50 (p95): server process {p50(server):.1f} ({pct(server, 0.95):.1f}) ms, "
                f"in-process {p50(inp):.1f} ({pct(inp, 0.95):.1f}) ms"
            )
            print(f"added by the server process at p50: {p50(server) - p50(inp):+.1f} ms (target <= 10 ms)")
            stop.set()
            sampler.join()
            print(f"server RSS under load (peak): {peak[0]:.0f} MB; after: {rss_mb(proc.pid):.0f} MB")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
