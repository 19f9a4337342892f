"""Soak over HTTP: a real `shvayambhu serve` process driven by ingest, chat and search clients at once, then checks.

The server (`python -m rag.cli serve --backend blt` on a free loopback port, SHVAYAMBHU_HOME a temporary folder)
starts over a store seeded through its own /v1/ingest. Then, for `--minutes`, client threads work on it at once:
ingesters POST JSONL rounds to /v1/ingest (the rounds of bench_soak.py: 100 records each, 75 shared with the
next ingester's), OpenAI clients (the `openai` package, streaming and not) and Ollama clients (/api/chat over
httpx) chat, each with its own X-Shvayambhu-Session so every answer is remembered, and searchers call
/v1/search. Every request has a timeout and every loop ends by itself. A 503 queue-full answer is retried and
counted apart; any other failure is an error. After the server stops (SIGTERM), a fresh process checks that
every record an ingest acknowledged with 200 is stored (lost), every vector is readable (unreadable) and every
record a search can return (unsearchable: a query filtered to its own id misses it), every chat acknowledged
with 200 left its exchange in its session's memories (lost memories), and `python -m rag.cli status --check`
exits 0 on the store. A peer ingests the acknowledged uploads one after another in a fresh store for comparison.
Prints ops/s, p50/p95 latency per kind and the counts; `--queue-depth 1` makes the chats meet 503s.

    PYTHONPATH=$PWD python bench/bench_soak_http.py --minutes 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
from bench_serve import free_port
from bench_soak import REPO, ROUND, SHIFT, pct, rows, state_of

from ingest.records import content_hash

BASE = 400  # records ingested before the clients start: what the chats and searches find
KINDS = ("ingest", "openai", "ollama", "search")
TIMEOUT = {"ingest": 300.0, "openai": 300.0, "ollama": 300.0, "search": 60.0}  # seconds per request
SESSION = "soak-http-{kind}-{who}"


class Busy(Exception):
    """A 503 queue-full answer: retried, counted apart from errors."""


@dataclass
class Tally:
    """What one kind of client did."""

    lat: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    busy: int = 0


@dataclass
class Run:
    """Shared between the client threads: the tallies, what was acknowledged, when to stop."""

    url: str
    until: float
    tally: dict[str, Tally] = field(default_factory=lambda: {k: Tally() for k in KINDS})
    acked_ids: set[str] = field(default_factory=set)
    acked_names: list[str] = field(default_factory=list)  # uploads answered with 200, in the order of the answers
    remembered: dict[str, Counter] = field(default_factory=dict)  # session -> questions answered with 200
    abstained: int = 0  # 200s the BLT abstained on: by design they leave no memory
    lock: threading.Lock = field(default_factory=threading.Lock)


def failure(r: httpx.Response) -> Exception:
    """Busy for a queue-full 503; otherwise an error naming the request and the answer."""
    if r.status_code == 503 and "queue_full" in r.text:
        return Busy()
    return RuntimeError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:300]}")


def attempt(run: Run, kind: str, send: Callable[[], Any]) -> Any | None:
    """`send()` until it is not a queue-full 503 (each one counted); its result, or None on an error (counted)."""
    tally = run.tally[kind]
    while True:
        t = time.perf_counter()
        try:
            out = send()
        except Busy:
            with run.lock:
                tally.busy += 1
            if time.time() > run.until + TIMEOUT[kind]:
                with run.lock:
                    tally.errors.append("503 queue full until the end")
                return None
            time.sleep(0.5)
            continue
        except Exception as e:  # counted and reported; the soak goes on
            with run.lock:
                tally.errors.append(f"{e.__class__.__name__}: {e}"[:400])
            return None
        with run.lock:
            tally.lat.append(time.perf_counter() - t)
        return out


def post_jsonl(client: httpx.Client, records: list[dict], name: str) -> dict:
    """One upload to /v1/ingest; the summary, with every record accounted for."""
    body = "".join(json.dumps(x) + "\n" for x in records).encode("utf-8")
    r = client.post(f"/v1/ingest?name={name}", content=body, headers={"Content-Type": "application/jsonl"})
    if r.status_code != 200:
        raise failure(r)
    d = r.json()
    if d["rejected"] or d["added"] + d["updated"] + d["unchanged"] != len(records):
        raise RuntimeError(f"POST /v1/ingest?name={name} -> 200 but not every record taken: {d}")
    return d


def ingester(run: Run, who: int) -> None:
    """Rounds of bench_soak.py, each its own upload name (a name reused would replace that upload's records)."""
    with httpx.Client(base_url=run.url, timeout=TIMEOUT["ingest"]) as client:
        r = 0
        while time.time() < run.until:
            recs = rows(r * ROUND * 4 + who * SHIFT, ROUND)
            name = f"http{who}-r{r:04d}.jsonl"
            if attempt(run, "ingest", partial(post_jsonl, client, recs, name)) is not None:
                with run.lock:
                    run.acked_ids.update(content_hash(x["prompt"], x["response"]) for x in recs)
                    run.acked_names.append(name)
            r += 1


def acked_chat(run: Run, session: str, question: str, evidence: dict | None) -> None:
    """Note a chat answered with 200: its exchange must be in its session, unless the BLT abstained."""
    if not evidence or evidence.get("session") != session:
        raise RuntimeError(f"chat in session {session}: 200 without the session's evidence: {evidence}")
    with run.lock:
        if evidence.get("done_reason") == "abstain":
            run.abstained += 1
        else:
            run.remembered.setdefault(session, Counter())[question] += 1


def note_chat(run: Run, kind: str, session: str, question: str, got: dict | None) -> None:
    """Check an answered chat (`acked_chat`; nothing when it was refused) and count a failed check as an error."""
    if got is None:
        return
    try:
        acked_chat(run, session, question, got)
    except RuntimeError as e:
        with run.lock:
            run.tally[kind].errors.append(str(e)[:400])


def openai_chatter(run: Run, who: int) -> None:
    """The real OpenAI client, its own retries off (a 503 is counted here); every other chat streams."""
    session = SESSION.format(kind="openai", who=who)
    client = openai.OpenAI(
        base_url=run.url + "/v1",
        api_key="unused",
        max_retries=0,
        timeout=TIMEOUT["openai"],
        default_headers={"X-Shvayambhu-Session": session},
    )
    rng, n = random.Random(who), 0
    while time.time() < run.until:
        question = f"Soak question {rng.randrange(BASE)} on theme {rng.randrange(41)}?"
        stream = n % 2 == 1

        def send(question: str = question, stream: bool = stream) -> dict | None:
            try:
                msgs = [{"role": "user", "content": question}]
                if not stream:
                    resp = client.chat.completions.create(model="shvayambhu", messages=msgs)
                    return (resp.model_extra or {}).get("shvayambhu")
                evidence = None
                for chunk in client.chat.completions.create(model="shvayambhu", messages=msgs, stream=True):
                    evidence = (chunk.model_extra or {}).get("shvayambhu") or evidence
                return evidence
            except openai.APIStatusError as e:
                if e.status_code == 503 and "queue_full" in e.response.text:
                    raise Busy() from None
                raise RuntimeError(f"POST /v1/chat/completions -> {e.status_code}: {e.response.text[:300]}") from None

        note_chat(run, "openai", session, question, attempt(run, "openai", send))
        n += 1


def ollama_chatter(run: Run, who: int) -> None:
    """Ollama's /api/chat, not streamed, over httpx."""
    session = SESSION.format(kind="ollama", who=who)
    headers = {"X-Shvayambhu-Session": session}
    rng = random.Random(1000 + who)
    with httpx.Client(base_url=run.url, timeout=TIMEOUT["ollama"], headers=headers) as client:
        while time.time() < run.until:
            question = f"Soak question {rng.randrange(BASE)} on theme {rng.randrange(41)}?"
            body = {"model": "shvayambhu", "stream": False, "messages": [{"role": "user", "content": question}]}

            def send(body: dict = body) -> dict:
                r = client.post("/api/chat", json=body)
                if r.status_code != 200:
                    raise failure(r)
                return r.json().get("shvayambhu") or {}

            note_chat(run, "ollama", session, question, attempt(run, "ollama", send))


def searcher(run: Run, who: int) -> None:
    """/v1/search for questions the seeded records answer; an empty answer is an error."""
    rng = random.Random(2000 + who)
    with httpx.Client(base_url=run.url, timeout=TIMEOUT["search"]) as client:
        while time.time() < run.until:
            query = f"Soak question {rng.randrange(BASE)} on theme {rng.randrange(41)}?"

            def send(query: str = query) -> list:
                r = client.post("/v1/search", json={"query": query, "k": 5})
                if r.status_code != 200:
                    raise failure(r)
                if not r.json():
                    raise RuntimeError(f"POST /v1/search {query!r} -> 200 with no hits")
                return r.json()

            attempt(run, "search", send)
            time.sleep(0.02)  # a person types


def server_env(home: Path, max_bytes: int) -> dict[str, str]:
    """The environment of the server and the checking processes: this tree, the store in `home`, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHVAYAMBHU_", "OLLAMA_"))}
    env.update(
        {
            "SHVAYAMBHU_HOME": str(home),
            "SHVAYAMBHU_BLT_MAX_BYTES": str(max_bytes),
            "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


def start_server(home: Path, env: dict[str, str], queue_depth: int | None) -> tuple[subprocess.Popen, str, Path]:
    """`python -m rag.cli serve --backend blt` on a free loopback port, once /healthz answers."""
    port, log = free_port(), home.parent / "server.log"
    cmd = [sys.executable, "-m", "rag.cli", "serve", "--port", str(port), "--backend", "blt", "--log-level", "warning"]
    cmd += ["--queue-depth", str(queue_depth)] if queue_depth else []
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=err, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the server did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)


def memories_of(home: Path, env: dict[str, str], sessions: list[str]) -> dict:
    """Each session's exchange questions and its unreadable memory vectors, read by a fresh process."""
    code = r"""
import json, sys
from index.doctor import check
from rag.api import Shvayambhu
a = Shvayambhu(store={"data_dir": sys.argv[1]})
out = {}
for s in sys.argv[2:]:
    m = a.memory(s)
    said = [x.text.split("\n", 1)[0].removeprefix("The user said: ") for x in m.list(kind="exchange")]
    col = m.collection()
    out[s] = {"said": said, "bad": len(check(col)) if col is not None else 0}
print(json.dumps(out))
"""
    p = subprocess.run([sys.executable, "-c", code, str(home), *sessions], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"reading the memories back failed (exit {p.returncode}): {p.stderr.strip()[-400:]}")
    return json.loads(p.stdout)


def sequential_peer(home: Path, names: list[str], env: dict[str, str]) -> tuple[Path, float]:
    """The acknowledged uploads ingested one after another, in the order they were acknowledged, by one process
    through the same API into a fresh store (nothing else running): what the concurrent store is held to."""
    code = r"""
import sys, time
from pathlib import Path
from rag.api import Shvayambhu
up, a = Path(sys.argv[1]), Shvayambhu(store={"data_dir": sys.argv[2]})
t = time.perf_counter()
for name in sys.argv[3:]:
    a.ingest([up / name], progress=False)
print(time.perf_counter() - t)
"""
    seq = home.parent / "sequential"
    cmd = [sys.executable, "-c", code, str(home / "uploads"), str(seq), *names]
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"the sequential peer failed (exit {p.returncode}): {p.stderr.strip()[-400:]}")
    return seq, float(p.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--ingesters", type=int, default=2)
    p.add_argument("--openai", type=int, default=2, help="OpenAI chat clients")
    p.add_argument("--ollama", type=int, default=1, help="Ollama /api/chat clients")
    p.add_argument("--searchers", type=int, default=3)
    p.add_argument("--queue-depth", type=int, help="the server's queue_depth (its default when absent)")
    p.add_argument("--max-bytes", type=int, default=48, help="BLT answer length in bytes")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soak-http-"))
    home = work / "home"
    env = server_env(home, args.max_bytes)
    t0 = time.perf_counter()
    proc, url, log = start_server(home, env, args.queue_depth)
    print(f"server up in {time.perf_counter() - t0:.1f} s at {url}; store {home}; log {log}")
    run = Run(url=url, until=0.0)
    with httpx.Client(base_url=url, timeout=TIMEOUT["ingest"]) as c:
        base = rows(0, BASE)
        post_jsonl(c, base, "base.jsonl")
        run.acked_ids.update(content_hash(x["prompt"], x["response"]) for x in base)
        run.acked_names.append("base.jsonl")
    start = time.time()
    run.until = start + args.minutes * 60
    roles = [(ingester, args.ingesters), (openai_chatter, args.openai), (ollama_chatter, args.ollama)]
    roles.append((searcher, args.searchers))
    threads = [threading.Thread(target=f, args=(run, k), daemon=True) for f, n in roles for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, run.until - time.time()) + max(TIMEOUT.values()) * 2)
    elapsed = time.time() - start
    hung = sum(t.is_alive() for t in threads)

    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    got = state_of(home)
    lost = len(run.acked_ids - set(got["docs"]))
    mems = memories_of(home, env, sorted(run.remembered))
    lost_mem = sum(
        max(0, n - Counter(mems[s]["said"])[q]) for s, want in run.remembered.items() for q, n in want.items()
    )
    bad_mem = sum(m["bad"] for m in mems.values())
    seq, seq_s = sequential_peer(home, run.acked_names, env)
    want = state_of(seq)
    check = subprocess.run(
        [sys.executable, "-m", "rag.cli", "status", "--check"], env=env, cwd=REPO, capture_output=True, text=True
    )

    print(f"soak over HTTP: {elapsed / 60:.2f} min on {os.cpu_count()} cores (shared machine: figures are noisy)")
    print(f"{'kind':8} {'clients':>7} {'ops':>6} {'ops/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'503s':>5} {'errors':>6}")
    clients = dict(zip(KINDS, (args.ingesters, args.openai, args.ollama, args.searchers), strict=True))
    errors = [f"{hung} client thread(s) still running at the end"] if hung else []
    for kind in KINDS:
        t = run.tally[kind]
        errors += [f"{kind}: {x}" for x in t.errors]
        print(
            f"{kind:8} {clients[kind]:>7} {len(t.lat):>6} {len(t.lat) / elapsed:>7.2f} "
            f"{pct(t.lat, 0.5):>8.0f} {pct(t.lat, 0.95):>8.0f} {t.busy:>5} {len(t.errors):>6}"
        )
    chats = sum(sum(c.values()) for c in run.remembered.values())
    print(
        f"records: {len(run.acked_ids)} acknowledged, {len(got['docs'])} stored; lost {lost}, unreadable vectors "
        f"{got['bad']}, self-retrieval misses {got['miss']} ({got['near']} of them in the top 10, "
        f"{got['far']} of them not even by a query filtered to their own id: unsearchable)"
    )
    print(
        f"peer: one process ingesting the same {len(run.acked_names)} uploads in turn ({seq_s:.1f} s): "
        f"{len(want['docs'])} records, self-retrieval misses {want['miss']}, unsearchable {want['far']}"
    )
    print(
        f"memories: {chats} chats answered in {len(run.remembered)} sessions ({run.abstained} more abstained, which "
        f"by design leave none); lost {lost_mem}, unreadable {bad_mem}"
    )
    print(f"server exit on SIGTERM: {code}; status --check: exit {check.returncode}")
    if check.returncode:
        errors.append(f"status --check exited {check.returncode}: {(check.stderr or check.stdout).strip()[-300:]}")
    if code not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM once it has shut down
        errors.append(f"the server exited {code} on SIGTERM")
    for x in errors[:10]:
        print("  error:", x[:400])
    if errors:
        logged = [x for x in log.read_text(errors="replace").splitlines() if "ERROR" in x or "Traceback" in x]
        for x in logged[:10]:
            print("  server log:", x[:400])
    ok = not errors and lost == 0 and got["bad"] == 0 and got["far"] == 0 and lost_mem == 0 and bad_mem == 0
    counts = {"lost": lost, "unreadable": got["bad"], "unsearchable": got["far"], "lost memories": lost_mem}
    counts["unreadable memories"] = bad_mem
    why = [f"{n} {what}" for what, n in counts.items() if n] + ([f"{len(errors)} errors"] if errors else [])
    print("OK: 0 errors, 0 lost, 0 unreadable, status --check clean" if ok else f"FAILED: {', '.join(why)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
