"""Overhead of the consciousness layer: time from a question to the first request sent to the backend.

That window holds the question's embedding, exemplar retrieval, memory recall, confidence, the workspace
competition and the prompt. It is measured warm at 10,000 corpus records and 1,000 memories (synthesised
here, embedded with the real model) against bare retrieval in the same retrieval mode (`--mode`, both sides:
dense is the query embedding plus a Chroma top-k, hybrid adds BM25 and the fusion, as `shvayambhu search`
does) in the same run, interleaved, on the same questions. Target: layer p50 <= 2 x bare p50.

    python bench/bench_layer.py [--records 10000] [--memories 1000] [--queries 200] [--mode dense|hybrid] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from index.retrieve import search  # noqa: E402
from index.store import get_collection  # noqa: E402
from rag.api import Shvayambhu  # noqa: E402
from rag.backends.base import Chunk, Generation, GenerationOptions, PromptProfile  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.exemplars import exemplars  # noqa: E402

TOPICS = [
    "sleep",
    "budgeting",
    "sourdough",
    "black holes",
    "photosynthesis",
    "grief",
    "job interviews",
    "Python",
    "TCP",
    "volcanoes",
    "the Roman Empire",
    "jazz",
    "chess openings",
    "composting",
    "marathon training",
    "tax returns",
    "vaccines",
    "climate change",
    "public speaking",
    "negotiation",
    "knitting",
    "birds",
    "quantum computing",
    "coffee brewing",
    "houseplants",
    "password managers",
    "the French Revolution",
    "poetry meter",
    "time management",
    "meditation",
    "electric cars",
    "solar panels",
    "memory palaces",
    "probability",
    "ethics of AI",
    "language learning",
    "dog training",
    "first aid",
    "home networking",
    "photography",
    "wine tasting",
    "game theory",
    "origami",
    "tides",
    "earthquakes",
    "the immune system",
    "renting a flat",
    "cycling",
    "spreadsheets",
    "databases",
]
ASPECTS = [
    "for a complete beginner",
    "on a tight budget",
    "in under ten minutes a day",
    "with small children",
    "when I feel stuck",
    "in a small apartment",
    "at work",
    "as a student",
    "after the age of fifty",
    "without special equipment",
    "in cold weather",
    "for a school project",
    "in plain words",
    "step by step",
    "and common mistakes",
    "and the science behind it",
    "in history",
    "for a presentation",
    "safely",
    "with examples",
]
FORMS = [
    "How do I get started with {t} {a}?",
    "What should I know about {t} {a}?",
    "Explain {t} {a}.",
    "What are good tips for {t} {a}?",
    "Why is {t} hard {a}?",
    "Can you compare approaches to {t} {a}?",
    "What is the biggest misconception about {t} {a}?",
    "How can I get better at {t} {a}?",
    "Is {t} worth the effort {a}?",
    "What does an expert think about first with {t} {a}?",
]
SENTENCES = [
    "Start with the basics of {t} and build up slowly, checking each step before the next.",
    "Most people underestimate how much practice {t} takes, so plan for small regular sessions.",
    "A common mistake with {t} is copying advice meant for someone in a very different situation.",
    "The underlying idea is simple, but the details of {t} reward patience and curiosity.",
    "Keep notes on what works for you; {t} is personal and your notes become your best guide.",
    "If something feels wrong, stop and ask someone experienced in {t} before going further.",
    "Cheap tools are fine to begin with; upgrade only when you know what limits you in {t}.",
    "Measure progress over weeks rather than days, because {t} improves in plateaus and jumps.",
]
QUESTIONS = [
    "How do I get started with sourdough on a tight budget?",
    "Why is the sky blue?",
    "What should I know about black holes in plain words?",
    "How can I fall asleep faster?",
    "What is the capital of Burkina Faso?",
    "Explain TCP step by step.",
    "My cat is called Miso, remember?",
    "How does photosynthesis work?",
    "What are good tips for public speaking at work?",
    "Is knitting worth the effort as a student?",
    "How do volcanoes erupt?",
    "What is game theory?",
    "How should I train for a marathon after the age of fifty?",
    "How do I deal with grief?",
    "What is overfitting in machine learning?",
    "Can you compare approaches to budgeting with children?",
]


class StubBackend:
    """A backend that answers at once and records when the layer first called it."""

    name = "stub"
    model = "stub"
    profile = PromptProfile()  # the layer's full prompt within the [workspace] budget

    def __init__(self) -> None:
        self.first_call: float | None = None

    def generate(self, messages: list[dict], options: GenerationOptions | None = None) -> Generation:
        if self.first_call is None:
            self.first_call = time.perf_counter()
        return Generation(text="A short answer. It cites [1].", model=self.model, backend=self.name)

    def stream(self, messages, options=None):
        gen = self.generate(messages, options)
        yield Chunk(text=gen.text, done=True, generation=gen)

    def available(self) -> bool:
        return True


def synth_records(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """n distinct prompt/response pairs."""
    out, seen = [], set()
    while len(out) < n:
        t, a, f = rng.choice(TOPICS), rng.choice(ASPECTS), rng.choice(FORMS)
        prompt = f.format(t=t, a=a)
        if prompt in seen:
            prompt = f"{prompt} (variant {len(out)})"
        seen.add(prompt)
        response = " ".join(s.format(t=t) for s in rng.sample(SENTENCES, rng.randint(3, 6)))
        out.append((prompt, response))
    return out


def build(home: Path, records: int, memories: int, a: Shvayambhu, rng: random.Random) -> None:
    emb = a.embedder
    col = get_collection(a.client, "corpus", model=emb.name, dim=emb.dim, embed_field="prompt")
    pairs = synth_records(records, rng)
    t = time.perf_counter()
    for i in range(0, len(pairs), 1000):
        batch = pairs[i : i + 1000]
        vecs = emb.embed([p for p, _ in batch])
        col.add(
            ids=[f"r{i + j}" for j in range(len(batch))],
            embeddings=vecs.tolist(),
            documents=[p for p, _ in batch],
            metadatas=[{"prompt": p, "response": r, "category": "synthetic"} for p, r in batch],
        )
    print(f"corpus: {col.count()} records embedded and stored in {time.perf_counter() - t:.1f} s", flush=True)
    a.lexical(col).sync(col)  # the keyword index, as an ingest builds it (a search would only start a rebuild)
    mem = a.memory("bench")
    now = time.time()
    texts = [f"The user said: {p}\nI answered: {r[:200]}" for p, r in synth_records(memories, random.Random(99))]
    t = time.perf_counter()
    for i in range(0, len(texts), 500):
        chunk = texts[i : i + 500]
        times = [now - rng.uniform(0, 30 * 86400) for _ in chunk]  # spread over the last 30 days
        mem.add_many(
            chunk,
            kind="exchange",
            importances=[rng.random() for _ in chunk],
            vectors=emb.embed(chunk),
            times=times,
        )
    print(f"memories: {mem.count()} stored in {time.perf_counter() - t:.1f} s", flush=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--memories", type=int, default=1_000)
    ap.add_argument("--queries", type=int, default=200, help="measured questions (after 20 warm-up ones)")
    ap.add_argument(
        "--mode", default=None, help="[retrieval] mode of the layer and of bare retrieval alike [the setting's: hybrid]"
    )
    ap.add_argument("--keep", type=Path, default=None, help="build the store here (reused when it exists)")
    args = ap.parse_args(argv)

    home = args.keep or Path(tempfile.mkdtemp(prefix="bench_layer_"))
    exists = (home / "chroma").exists()
    overrides = {"store": {"data_dir": str(home)}, "memory": {"reflect_every": 0}}
    if args.mode:
        overrides["retrieval"] = {"mode": args.mode}
    settings = load_settings(overrides=overrides, environ={})
    a = Shvayambhu(settings)
    rng = random.Random(0)
    try:
        if not exists:
            build(home, args.records, args.memories, a, rng)
        corpus = a.corpus()
        mem = a.memory("bench")
        k = settings.retrieval.k
        runtime = getattr(a.embedder, "runtime", "torch")
        r, w, m = settings.retrieval, settings.workspace, settings.memory
        print(f"store {home}: {corpus.count()} records, {mem.count()} memories; embedder {runtime}")
        print(
            f"settings: retrieval mode={r.mode} fusion={r.fusion} k={r.k} mmr={r.mmr} fetch_k={r.fetch_k} "
            f"exclude_split={r.exclude_split!r}; "
            f"memory recall_k={m.recall_k} min_relevance={m.min_relevance}; workspace budget_bytes={w.budget_bytes}"
        )

        mode = settings.retrieval.mode
        lexical = a.lexical(corpus) if mode != "dense" else None

        def bare(q: str) -> float:
            t = time.perf_counter()
            search(corpus, a.embedder, q, k=k, mode=mode, lexical=lexical, fusion=a.fusion())
            return (time.perf_counter() - t) * 1000

        def layer(q: str) -> tuple[float, dict[str, float]]:
            stub = StubBackend()
            t = time.perf_counter()
            ans = a.ask(q, backend=stub, session="bench")
            return (stub.first_call - t) * 1000, ans.timings

        for i in range(20):  # warm-up: caches, lazy imports, the HNSW index in memory
            q = QUESTIONS[i % len(QUESTIONS)]
            bare(q)
            layer(q)
        b_ms, l_ms = [], []
        for i in range(args.queries):
            q = QUESTIONS[i % len(QUESTIONS)]
            if i % 2:  # interleave the order, so that both see the same machine load
                b_ms.append(bare(q))
                l_ms.append(layer(q)[0])
            else:
                l_ms.append(layer(q)[0])
                b_ms.append(bare(q))

        # where the layer's time goes (same questions, measured separately)
        parts: dict[str, list[float]] = {"embed": [], "corpus top-k": [], "memory recall": []}
        for q in QUESTIONS:
            t = time.perf_counter()
            v = a.embedder.embed_query(q)
            t1 = time.perf_counter()
            exemplars(corpus, v, settings.retrieval, k, text=q, lexical=lexical, fusion=a.fusion())
            t2 = time.perf_counter()
            mem.recall(vector=v)
            t3 = time.perf_counter()
            parts["embed"].append((t1 - t) * 1000)
            parts["corpus top-k"].append((t2 - t1) * 1000)
            parts["memory recall"].append((t3 - t2) * 1000)

        print(f"\nwarm, {args.queries} questions each, interleaved (ms):")
        for name, xs in (
            (f"bare {mode} retrieval (embed + top-{k})", b_ms),
            ("layer, question -> backend call", l_ms),
        ):
            print(f"  {name:38} p50 {pct(xs, 50):7.2f}  p95 {pct(xs, 95):7.2f}")
        ratio = pct(l_ms, 50) / pct(b_ms, 50)
        print(f"  ratio p50 layer/bare: {ratio:.2f}  (target <= 2.0: {'met' if ratio <= 2.0 else 'NOT met'})")
        print("  breakdown p50: " + ", ".join(f"{n} {statistics.median(v):.2f}" for n, v in parts.items()))
        print(f"  memories at the end: {mem.count()} (each measured ask stored one more)")
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
