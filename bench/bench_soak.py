"""Soak: concurrent ingesters, searchers and BLT `ask` loops on one embedded store for N minutes, then checks.

Four ingester processes write overlapping corpora (every round a new file of 100 records, 75 shared with the
next ingester's round), eight searcher processes query, two processes answer with the BLT. At the end the
store must hold exactly what one process ingesting the same files in order holds, every vector readable and
every record its own nearest neighbour. Prints operations/s, p50/p95 latencies, errors and lost records.

    PYTHONPATH=$PWD python bench/bench_soak.py --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROUND = 100  # records per ingest round
SHIFT = 25  # ingester k's round r starts at r*ROUND*4 + k*SHIFT: rounds of neighbours overlap by 75 records


def rows(start: int, n: int) -> list[dict]:
    return [
        {"prompt": f"Soak question {i} on theme {i % 41}?", "response": f"Soak answer {i}: figure {i * 7919 % 10007}."}
        for i in range(start, start + n)
    ]


def write_round(folder: Path, who: int, r: int) -> Path:
    path = folder / f"ing{who}-r{r:04d}.jsonl"
    start = r * ROUND * 4 + who * SHIFT
    path.write_text("".join(json.dumps(x) + "\n" for x in rows(start, ROUND)), encoding="utf-8")
    return path


def role_ingester(args: argparse.Namespace) -> dict:
    from index.embed import load_embedder
    from index.store import get_collection, open_client
    from ingest.pipeline import ingest_paths

    e = load_embedder()
    col = get_collection(open_client(args.data), "corpus", model=e.name, dim=e.dim)
    done, lat, errors, r = [], [], [], 0
    while time.time() < args.until:
        path = write_round(Path(args.work), args.id, r)
        t = time.perf_counter()
        try:
            ingest_paths([path], col, e, progress=False)
            done.append(str(path))
            lat.append(time.perf_counter() - t)
        except Exception as ex:  # counted and reported, the soak goes on
            errors.append(f"{ex.__class__.__name__}: {ex}")
        r += 1
    return {"done": done, "lat": lat, "errors": errors}


def role_searcher(args: argparse.Namespace) -> dict:
    from index.embed import load_embedder
    from index.retrieve import search
    from index.store import open_client

    e = load_embedder()
    col = open_client(args.data).get_collection("corpus")
    rng, lat, errors = random.Random(args.id), [], []
    while time.time() < args.until:
        q = f"Soak question {rng.randrange(4000)} on theme {rng.randrange(41)}?"
        t = time.perf_counter()
        try:
            hits = search(col, e, q, k=5)
            lat.append(time.perf_counter() - t)
            if not hits:
                errors.append(f"no hits for {q!r}")
        except Exception as ex:
            errors.append(f"{ex.__class__.__name__}: {ex}")
        time.sleep(0.02)  # a person types; eight of them still keep a store busy
    return {"lat": lat, "errors": errors}


def role_asker(args: argparse.Namespace) -> dict:
    from rag.api import Shvayambhu

    assistant = Shvayambhu(store={"data_dir": args.data}, blt={"max_bytes": 48})
    rng, lat, errors = random.Random(100 + args.id), [], []
    while time.time() < args.until:
        q = f"Soak question {rng.randrange(400)} on theme {rng.randrange(41)}?"
        t = time.perf_counter()
        try:
            # its own memory session per loop: memory writes take no store lock yet (see NOTES-faults.md)
            answer = assistant.ask(q, backend="blt", session=f"soak{args.id}")
            lat.append(time.perf_counter() - t)
            if not answer.sources:
                errors.append(f"no sources for {q!r}")
        except Exception as ex:
            errors.append(f"{ex.__class__.__name__}: {ex}")
    return {"lat": lat, "errors": errors}


ROLES = {"ingester": role_ingester, "searcher": role_searcher, "asker": role_asker}


def run_role(args: argparse.Namespace) -> None:
    try:
        out = ROLES[args.role](args)
    except Exception:
        out = {"lat": [], "errors": [traceback.format_exc().strip().splitlines()[-1]], "crashed": True}
    Path(args.out).write_text(json.dumps(out))


def spawn(role: str, who: int, data: Path, work: Path, until: float) -> tuple[str, subprocess.Popen, Path]:
    out = work / f"{role}{who}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--role", role, "--id", str(who), "--data", str(data), "--work", str(work)]
    cmd += ["--until", str(until), "--out", str(out)]
    log = (work / f"{role}{who}.log").open("w")
    return role, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), out


def state_of(data: Path) -> dict:
    """Documents, unreadable vectors, self-retrieval misses (top 1 / top 10) and records no search can return
    (`far`: a query filtered to the record's own id misses it) of the corpus, read by a fresh process."""
    code = r"""
import json, sys
from index.store import open_client
from index.doctor import check
col = open_client(sys.argv[1]).get_collection("corpus")
bad = check(col)
got = col.get(include=["documents"] + ([] if bad else ["embeddings"]))
miss, near = [], 0
if not bad:
    ids, embs = got["ids"], got["embeddings"]
    for i in range(0, len(ids), 100):
        res = col.query(query_embeddings=[list(x) for x in embs[i:i+100]], n_results=10)
        miss += [j for r, j in zip(res["ids"], ids[i:i+100]) if r[0] != j]
        near += sum(r[0] != j and j in r for r, j in zip(res["ids"], ids[i:i+100]))
far = 0  # misses that a query filtered to their own id does not return: not in the vector index (no recall issue)
by_id = dict(zip(ids, embs)) if miss else {}
for j in miss:
    far += j not in col.query(query_embeddings=[list(by_id[j])], n_results=1, where={"hash": j})["ids"][0]
out = {"docs": dict(zip(got["ids"], got["documents"])), "bad": len(bad), "miss": len(miss), "near": near, "far": far}
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(data)], env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise SystemExit(f"reading the store back failed (exit {out.returncode}): {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--ingesters", type=int, default=4)
    p.add_argument("--searchers", type=int, default=8)
    p.add_argument("--askers", type=int, default=2)
    p.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    p.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        return run_role(args)

    from index.embed import load_embedder
    from index.store import get_collection, open_client
    from ingest.pipeline import ingest_paths

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    data, seq = work / "data", work / "sequential"
    base = work / "base.jsonl"
    base.write_text("".join(json.dumps(x) + "\n" for x in rows(0, 400)), encoding="utf-8")
    e = load_embedder()
    ingest_paths([base], get_collection(open_client(data), "corpus", model=e.name, dim=e.dim), e, progress=False)
    start = time.time()
    until = start + args.minutes * 60
    procs = [spawn("ingester", k, data, work, until) for k in range(args.ingesters)]
    procs += [spawn("searcher", k, data, work, until) for k in range(args.searchers)]
    procs += [spawn("asker", k, data, work, until) for k in range(args.askers)]
    results: dict[str, list[dict]] = {r: [] for r in ROLES}
    crashed = []
    for role, proc, out in procs:
        code = proc.wait()
        if code or not out.exists():
            crashed.append(f"{role} exited {code} (log: {out.with_suffix('.log')})")
            continue
        results[role].append(json.loads(out.read_text()))
    elapsed = time.time() - start

    done = [f for r in results["ingester"] for f in r["done"]]
    seq_col = get_collection(open_client(seq), "corpus", model=e.name, dim=e.dim)
    ingest_paths([base], seq_col, e, progress=False)
    t = time.perf_counter()
    for f in sorted(done, key=lambda s: Path(s).name):
        ingest_paths([f], seq_col, e, progress=False)
    seq_s = time.perf_counter() - t
    got, want = state_of(data), state_of(seq)
    lost = len(set(want["docs"]) - set(got["docs"])) + got["bad"]
    extra = len(set(got["docs"]) - set(want["docs"]))

    print(f"soak: {args.minutes:g} min on {os.cpu_count()} cores (shared machine: figures are noisy); store {data}")
    print(f"{'role':10} {'procs':>5} {'ops':>6} {'ops/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6}")
    errors = list(crashed)
    for role in ROLES:
        lat = [x for r in results[role] for x in r["lat"]]
        errs = [x for r in results[role] for x in r["errors"]]
        errors += [f"{role}: {x}" for x in errs]
        n = len(results[role])
        print(
            f"{role:10} {n:>5} {len(lat):>6} {len(lat) / elapsed:>7.2f} "
            f"{pct(lat, 0.5):>8.0f} {pct(lat, 0.95):>8.0f} {len(errs):>6}"
        )
    print(
        f"records: {len(got['docs'])} stored, {len(want['docs'])} in the sequential run; lost {lost}, extra {extra}, "
        f"unreadable vectors {got['bad']}, self-retrieval misses {got['miss']} ({got['near']} of them in the top 10; "
        f"sequential run: {want['miss']})"
    )
    print(f"peer: one process ingesting the same {len(done)} round files in turn (nothing else running): {seq_s:.1f} s")
    for x in errors[:10]:
        print("  error:", x[:300])
    ok = not errors and lost == 0 and extra == 0 and got["miss"] <= want["miss"]
    print("OK: 0 errors, 0 lost" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
