"""Throughput of `shvayambhu generate` against the fake Ollama server answering after a fixed delay.

Prints requests/s at each concurrency next to the ideal (concurrency / delay), and the overhead per record
on top of the server's time (client, streaming parse, validation, durable append). The server runs in its
own process so that it does not share the GIL with the generator.

    python bench/bench_generate.py                 # delay 0.2 s, concurrency 1, 4, 16
    python bench/bench_generate.py --delay 0.1 --concurrency 1,8,32 --stream --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rag.synthesis import SynthesisConfig, synthesize  # noqa: E402


def start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    """The fake server on a free loopback port; returns the process and its URL."""
    script = REPO / "tests" / "ollama_server.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--models", "bench", "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
    return proc, url


def run_once(url: str, concurrency: int, jobs: int, fsync_interval: float, stream: bool = False) -> dict[str, float]:
    """One generation run of `jobs` records; timings from the summary."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthesisConfig(
            out=Path(tmp) / "bench.jsonl",
            models=["bench"],
            n=jobs,
            seed=0,
            host=url,
            concurrency=concurrency,
            progress=False,
            fsync_interval=fsync_interval,
            retries=0,
            stream=stream,
        )
        t = time.perf_counter()
        s = synthesize(cfg)
        elapsed = time.perf_counter() - t
    assert s.done == jobs, s
    return {"records": jobs, "elapsed_s": elapsed, "rps": jobs / elapsed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.2, help="server seconds per answer")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=10, help="records per worker slot (at least 20 records)")
    ap.add_argument("--stream", action="store_true", help="stream answers (~75 chunks each)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    rows = []
    proc, url = start_server(args.delay)
    try:
        run_once(url, 2, 4, 1.0)  # warm up: imports, first connections
        for c in levels:
            jobs = max(20, c * args.rounds)
            r = run_once(url, c, jobs, 1.0, args.stream)
            ideal = c / args.delay if args.delay else float("inf")
            per_slot = r["elapsed_s"] * c / jobs  # wall time one worker slot spent per record
            rows.append(
                {
                    "concurrency": c,
                    **r,
                    "ideal_rps": ideal,
                    "efficiency": r["rps"] / ideal,
                    "overhead_ms": (per_slot - args.delay) * 1000,
                }
            )
        fsync = run_once(url, levels[-1], max(20, levels[-1] * args.rounds), 0.0, args.stream)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    proc0, url0 = start_server(0.0)
    try:
        run_once(url0, 1, 4, 1.0)
        bare1 = run_once(url0, 1, 200, 1.0, args.stream)
        bare16 = run_once(url0, 16, 400, 1.0, args.stream)
    finally:
        proc0.terminate()
        proc0.wait(timeout=10)

    report = {
        "delay_s": args.delay,
        "stream": args.stream,
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "rows": rows,
        "fsync_every_line_rps": fsync["rps"],
        "fsync_every_line_concurrency": levels[-1],
        "zero_delay_ms_per_record_c1": 1000 / bare1["rps"],
        "zero_delay_rps_c16": bare16["rps"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    mode = "streamed" if args.stream else "non-streamed, the generator's default"
    print(
        f"fake Ollama answering after {args.delay:.3f} s ({mode}); "
        f"{report['cpus']} CPUs, load average {report['loadavg_1m']:.1f}"
    )
    print(f"{'conc':>5} {'records':>8} {'req/s':>8} {'ideal':>8} {'eff':>6} {'overhead/record':>16}")
    for r in rows:
        print(
            f"{r['concurrency']:>5} {r['records']:>8} {r['rps']:>8.2f} {r['ideal_rps']:>8.1f} "
            f"{r['efficiency']:>6.0%} {r['overhead_ms']:>13.1f} ms"
        )
    print(f"fsync after every line (c={levels[-1]}): {fsync['rps']:.2f} req/s")
    print(
        f"zero server delay: {report['zero_delay_ms_per_record_c1']:.1f} ms/record at c=1, "
        f"{bare16['rps']:.0f} req/s at c=16"
    )


if __name__ == "__main__":
    main()
