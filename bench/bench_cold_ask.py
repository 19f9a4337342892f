"""Time to first token of `shvayambhu ask`: through a running `shvayambhu serve` (warm model) vs in-process cold.

Each measurement is a fresh `shvayambhu ask --stream` process (interpreter start, imports, everything), timed
from its start to the first byte of the answer on stdout. In-process runs use `--no-server`; the first one
may build the float32 weight cache (reported apart), the rest read it. Through the server two rows: the same
question asked again (its prompt's keys and values are kept: rag.backends.prompt_cache), and a new question
each time (a different retrieved passage; only the system prompt and template head are shared with earlier
prompts). The server is measured once /healthz says it is warm (older servers without that field at once).
CPU seconds are printed beside the wall times: on a machine others load they are the steadier comparison (the
client's whole run; the server's from the question's start to the first byte).
Targets (issue 23): <= 1.5 s through the server, <= 4 s in-process cold, on a 2-core machine.

    python bench/bench_cold_ask.py                       # a temporary store with the seed corpus
    python bench/bench_cold_ask.py --home DIR --repeat 5 --backend mlx
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.backends import weight_cache  # noqa: E402
from rag.serve import discovery  # noqa: E402

CLI = [sys.executable, "-m", "rag.cli"]
NEW_QUESTIONS = (
    "Why is the sky blue?",
    "How do I make bread rise better?",
    "How can I save money on groceries?",
    "How do vaccines work?",
    "What is the best way to learn a new language?",
)


def env_for(home: Path, max_tokens: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHVAYAMBHU_")}
    env.update({"SHVAYAMBHU_HOME": str(home), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    if max_tokens:  # the server gets the same setting, so the CLI uses it
        env["SHVAYAMBHU_MLX_MAX_TOKENS"] = env["SHVAYAMBHU_OLLAMA_MAX_TOKENS"] = str(max_tokens)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# CPU seconds: the client process's whole run and to its first byte, the server's to the client's first byte
CPU: dict[str, list[float]] = {}


def first_token(args: list[str], env: dict[str, str], server: int | None = None) -> tuple[float, float]:
    """(seconds to the first answer byte on stdout, seconds to exit) of one `ask --stream` process. CPU seconds
    (machine load does not stretch them as it does wall time) go to CPU["client"] and, given the server's pid,
    CPU["server"] (its CPU from the start of the process to the first byte)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    served = cpu_seconds(server) if server else 0.0
    start = time.perf_counter()
    proc = subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    byte = proc.stdout.read(1)
    ttft = time.perf_counter() - start
    try:
        CPU.setdefault("client_first", []).append(cpu_seconds(proc.pid))
    except (OSError, IndexError):  # it ended already
        CPU.setdefault("client_first", []).append(float("nan"))
    if server:
        CPU.setdefault("server", []).append(cpu_seconds(server) - served)
    rest, err = proc.communicate(timeout=600)
    total = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault("client", []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if proc.returncode != 0 or not byte:
        raise SystemExit(f"`{' '.join(args)}` failed ({proc.returncode}): {err.decode()[-2000:]}")
    return ttft, total


def start_server(env: dict[str, str], home: Path, backend: str) -> subprocess.Popen:
    """`serve --port 0` with the backend loaded (the first answer does not pay for the load)."""
    cmd = CLI + ["serve", "--port", "0", "--backend", backend, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        info = discovery.read(home)
        if info is not None and info["pid"] == proc.pid:
            req = urllib.request.Request(
                f"http://{info['host']}:{info['port']}/v1/backend",
                data=json.dumps({"backend": backend}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=300).read()  # returns once the model is loaded
            while time.monotonic() < deadline:  # and the warm-up question has run
                with urllib.request.urlopen(f"http://{info['host']}:{info['port']}/healthz", timeout=30) as r:
                    if json.loads(r.read()).get("warm", True):
                        return proc
                time.sleep(0.2)
            break
        if proc.poll() is not None:
            raise SystemExit("the server exited before it listened")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start in 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="data folder with a corpus (default: a temporary seed store)")
    ap.add_argument("--backend", default="mlx")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--question", default="How can I fall asleep faster?")
    ap.add_argument(
        "--new-questions",
        default=";".join(NEW_QUESTIONS),
        help="';'-separated questions for the 'new question each time' row (one per run, none asked before)",
    )
    ap.add_argument("--max-tokens", type=int, default=32, help="answer length (0: the configured one)")
    ap.add_argument("--fresh-cache", action="store_true", help="remove the float32 weight cache first")
    a = ap.parse_args()

    tmp = None
    home = a.home
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-cold-ask-")
        home = Path(tmp.name)
        print("ingesting the seed corpus into", home, flush=True)
        subprocess.run(CLI + ["ingest", str(REPO / "ingest/data/seed.jsonl")], env=env_for(home), check=True)
    env = env_for(home, a.max_tokens)
    ask = ["ask", a.question, "--stream", "--no-memory", "--backend", a.backend]
    fresh = [q for q in a.new_questions.split(";") if q.strip()]
    if len(fresh) < a.repeat:
        raise SystemExit(f"--new-questions gives {len(fresh)} questions for --repeat {a.repeat}: give more")
    if a.fresh_cache:
        for f in weight_cache.cache_dir().glob("*.safetensors"):
            f.unlink()

    rows: list[tuple[str, list[float], list[float]]] = []
    cpu: list[tuple[list[float], list[float], list[float]]] = []  # per row: client (whole run, to first byte), server

    def measured(runs: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
        n = len(runs)
        cpu.append((CPU.pop("client", [])[-n:], CPU.pop("client_first", [])[-n:], CPU.pop("server", [])[-n:]))
        return [r[0] for r in runs], [r[1] for r in runs]

    first = first_token([*ask, "--no-server"], env)
    rows.append(("in-process, first run (may build the weight cache)", *measured([first])))
    cold = [first_token([*ask, "--no-server"], env) for _ in range(a.repeat)]
    rows.append(("in-process cold (weight cache read)", *measured(cold)))
    server = start_server(env, home, a.backend)
    try:
        new = [first_token(["ask", q, *ask[2:]], env, server.pid) for q in fresh[: a.repeat]]
        rows.append(("through a running serve, a new question each time", *measured(new)))
        first_token(ask, env)  # asked once: the row below asks it again
        CPU.clear()
        warm = [first_token(ask, env, server.pid) for _ in range(a.repeat)]
        rows.append(("through a running serve, the same question again", *measured(warm)))
    finally:
        server.terminate()
        server.wait(timeout=30)

    head = "CPU s: client (run, to 1st byte), server"
    print(f"\n{'':54} {'first token (median, min-max)':>32} {'whole answer':>14} {head:>42}")
    for (name, ttfts, totals), (client, first, served) in zip(rows, cpu, strict=True):
        spread = f"{min(ttfts):.2f}-{max(ttfts):.2f}" if len(ttfts) > 1 else ""
        cpus = f"{statistics.median(client):.2f}, {statistics.median(first):.2f}"
        cpus += f", {statistics.median(served):.2f}" if served else ""
        print(
            f"{name:54} {statistics.median(ttfts):>14.2f} s {spread:>15} {statistics.median(totals):>12.2f} s "
            f"{cpus:>42}"
        )
    print(
        f"\nbackend {a.backend}, {a.repeat} runs each, answers of at most {a.max_tokens or 'the configured'} tokens, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; question {a.question!r}"
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
