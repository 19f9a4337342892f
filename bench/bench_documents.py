"""Documents: conversion time per fixture, a 50-page PDF to stored passages against the converter alone, and
retrieval on the document fixture (the right page or heading in the top 3).

    PYTHONPATH=. .venv/bin/python bench/bench_documents.py [--pages 50] [--precision int8]

Needs reportlab (dev) to write the 50-page PDF. Imports and the embedding model are loaded before any timing;
the store is fresh for each measured ingest.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "tests" / "data" / "docs"
FIXTURES = ("ferry_manual.pdf", "garden_handbook.docx", "quarterly_review.pptx", "sourdough.html")
TOPICS = ("harbour", "timetable", "engines", "fares", "safety", "weather", "crew", "cargo", "slipway", "tides")


def make_docs_module():
    spec = importlib.util.spec_from_file_location("make_docs", DOCS / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def long_pdf(path: Path, pages: int) -> None:
    """`pages` pages of numbered sections: headings, ~350 words of varied prose a page, a table every fifth page."""
    import random

    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table

    rng = random.Random(0)
    words = [f"{t}{s}" for t in TOPICS for s in ("", "s", "ing", "ed", "er")] + "the a of to and in is for on".split()
    styles = getSampleStyleSheet()
    story: list = []
    for p in range(1, pages + 1):
        story.append(Paragraph(f"{p} Section on {TOPICS[p % len(TOPICS)]}", styles["Heading1"]))
        for _ in range(5):
            sentences = [
                " ".join(rng.choice(words) for _ in range(rng.randint(8, 18))).capitalize() + "." for _ in range(5)
            ]
            story.append(Paragraph(" ".join(sentences), styles["BodyText"]))
        if p % 5 == 0:
            story.append(
                Table([["Item", "Value", "Unit"]] + [[f"row {i}", str(rng.randint(1, 999)), "kg"] for i in range(6)])
            )
        story.append(PageBreak())
    SimpleDocTemplate(str(path), pagesize=A4).build(story)


def converter_alone(path: Path) -> float:
    """markitdown's PDF converter on the whole file, as a user of markitdown would call it."""
    from markitdown import StreamInfo
    from markitdown.converters import PdfConverter

    t = time.perf_counter()
    PdfConverter().convert(io.BytesIO(path.read_bytes()), StreamInfo(extension=".pdf"))
    return time.perf_counter() - t


def fresh_store(root: Path, emb):
    from index.lexical import LexicalStore
    from index.store import get_collection, open_client

    root.mkdir(parents=True)
    col = get_collection(
        open_client(root), "corpus", model=emb.name, dim=emb.dim, embed_field="prompt", precision=emb.precision
    )
    return col, LexicalStore.for_collection(root, col)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--precision", default="int8", help="embedding precision of the store (a new store is int8)")
    args = ap.parse_args()

    from index.embed import load_embedder
    from index.retrieve import search
    from ingest.documents import convert
    from ingest.pipeline import collect, ingest_paths

    emb = load_embedder(precision=args.precision)
    emb.embed(["warm up"])
    convert(DOCS / "quarterly_review.pptx")  # imports markitdown and its converters before any timing
    tmp = Path(tempfile.mkdtemp(prefix="bench_docs_"))
    try:
        print("## Conversion of the fixtures (markitdown 0.1.x)")
        print("| file | bytes | seconds | pages | passages |")
        print("| --- | --- | --- | --- | --- |")
        for name in FIXTURES:
            convert(DOCS / name)  # the first call of a converter imports its libraries (mammoth, pdfplumber...)
            t = time.perf_counter()
            pages = convert(DOCS / name)
            seconds = time.perf_counter() - t
            records, _ = collect([DOCS / name])
            n_pages = sum(1 for p in pages if p.number) or "-"
            print(f"| {name} | {(DOCS / name).stat().st_size} | {seconds:.3f} | {n_pages} | {len(records)} |")

        pdf = tmp / "long.pdf"
        long_pdf(pdf, args.pages)
        alone = min(converter_alone(pdf) for _ in range(2))
        t = time.perf_counter()
        pages = convert(pdf)
        ours_convert = time.perf_counter() - t
        t = time.perf_counter()
        records, _ = collect([pdf])
        split = time.perf_counter() - t
        texts = [r.embed_text() for r in records]
        t = time.perf_counter()
        emb.embed(texts)
        embed = time.perf_counter() - t
        col, lex = fresh_store(tmp / "store", emb)
        t = time.perf_counter()
        summary = ingest_paths([pdf], col, emb, progress=False, lexical=lex)
        total = time.perf_counter() - t
        print(f"\n## A {args.pages}-page PDF ({pdf.stat().st_size} bytes, {len(pages)} pages kept)")
        print("| step | seconds | x converter alone | x our conversion |")
        print("| --- | --- | --- | --- |")
        rows = [
            ("markitdown PdfConverter alone, whole file", alone),
            ("our conversion (pages kept)", ours_convert),
            (f"our conversion + passage split ({len(records)} passages)", split),
            (f"embedding those passages alone ({args.precision})", embed),
            ("ingest: convert + split + embed + store (+ lexical index)", total),
        ]
        for name, seconds in rows:
            print(f"| {name} | {seconds:.2f} | {seconds / alone:.2f} | {seconds / ours_convert:.2f} |")
        assert summary.added == len(records)

        print("\n## Retrieval on the document fixture: the right page or heading in the top 3")
        folder = tmp / "docs"
        folder.mkdir()
        for name in FIXTURES:
            shutil.copy(DOCS / name, folder / name)
        col, lex = fresh_store(tmp / "store2", emb)
        ingest_paths([folder], col, emb, progress=False, lexical=lex)
        questions = make_docs_module().QUESTIONS
        for mode in ("dense", "hybrid"):
            found, misses = 0, []
            for q, file, where in questions:
                hits = search(col, emb, q, k=3, mode=mode, lexical=lex if mode != "dense" else None)
                ok = any(
                    Path(h.metadata["source"]).name == file
                    and where in (h.metadata.get("page"), h.metadata.get("heading"))
                    for h in hits
                )
                found += ok
                if not ok:
                    misses.append(q)
            print(
                f"{mode}: {found}/{len(questions)} = {found / len(questions):.0%} in top 3"
                + (f"; missed: {misses}" if misses else "")
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
