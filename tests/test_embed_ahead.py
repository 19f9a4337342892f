"""A PDF converted page by page in one parse, its passages embedded while the later pages convert
(ingest.documents.convert_pages, ingest.pdf_text, ingest.embed_ahead): markitdown's text of each page, the same
records and vectors as embedding them at the end, and nothing embedded twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ingest import documents, embed_ahead, pdf_text, pipeline
from ingest.pipeline import collect, ingest_paths

DOCS = Path(__file__).resolve().parent / "data" / "docs"
PDF = DOCS / "ferry_manual.pdf"  # 5 pages


def markitdown_page_by_page(data: bytes) -> list[str]:
    """markitdown's PdfConverter on each page of the PDF `data` alone (its trailing form feed dropped)."""
    import io

    import pypdfium2 as pdfium
    from markitdown import StreamInfo
    from markitdown.converters import PdfConverter

    doc = pdfium.PdfDocument(data)
    try:
        alone = []
        for i in range(len(doc)):
            single = pdfium.PdfDocument.new()
            single.import_pages(doc, [i])
            buf = io.BytesIO()
            single.save(buf)
            single.close()
            buf.seek(0)
            alone.append(PdfConverter().convert(buf, StreamInfo(extension=".pdf")).markdown.rstrip("\f"))
        return alone
    finally:
        doc.close()


def test_pages_are_markitdowns_each_page_alone() -> None:
    """The one-parse conversion (ingest.pdf_text) gives, page by page, what markitdown's PdfConverter gives for that
    page on its own: the table page as a Markdown table, the prose pages as pdfminer's text."""
    pages = list(documents.convert_pages(PDF))
    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
    assert [p.markdown for p in pages] == markitdown_page_by_page(PDF.read_bytes())
    assert "| Port Alder to Gull Island" in pages[1].markdown and "250 running hours" in pages[3].markdown


def test_a_rotated_page_goes_through_pdfplumber_and_reads_the_same(monkeypatch) -> None:
    import io

    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(PDF.read_bytes())
    doc[2].set_rotation(90)
    buf = io.BytesIO()
    doc.save(buf)
    doc.close()
    plumbed: list[int] = []
    through = pdf_text._through_pdfplumber
    monkeypatch.setattr(pdf_text, "_through_pdfplumber", lambda data, n: (plumbed.append(n), through(data, n))[1])
    pages = [text for _, text in pdf_text.pdf_pages(buf.getvalue())]
    assert plumbed == [3]  # the shortcut's coordinates hold for unrotated pages only
    assert pages == markitdown_page_by_page(buf.getvalue())


def test_passages_embedded_while_later_pages_convert(monkeypatch, make_collection, embedder, tmp_path):
    converted: list[int] = []  # pages parsed so far, seen at each passage offered to the embedder
    parse = pdf_text.pdf_pages

    def counting(data):
        for n, text in parse(data):
            converted.append(n)
            yield n, text

    monkeypatch.setattr(pdf_text, "pdf_pages", counting)
    offered: list[int] = []
    offer = embed_ahead.EmbedAhead.offer
    monkeypatch.setattr(
        embed_ahead.EmbedAhead, "offer", lambda self, r: (offered.append(len(converted)), offer(self, r))
    )
    written: list[int] = []
    write = pipeline._write
    monkeypatch.setattr(
        pipeline, "_write", lambda col, model, todo, *a: (written.append(len(todo)), write(col, model, todo, *a))
    )

    pdf = tmp_path / "ferry.pdf"
    shutil.copy(PDF, pdf)
    col = make_collection()
    summary = ingest_paths([pdf], col, embedder, progress=False)
    assert offered and offered[0] < len(converted) == 5  # the first passages went while later pages waited
    records, _ = collect([pdf])
    assert summary.added == len(records) == col.count() > 0
    assert written == []  # every vector came from embedding ahead
    got = col.get(ids=[r.id for r in records], include=["embeddings", "documents"])
    vectors = embedder.embed(got["documents"])
    assert np.min(np.sum(np.asarray(got["embeddings"]) * vectors, axis=1)) > 0.999

    again = ingest_paths([pdf], col, embedder, progress=False)  # unchanged: read from the store, nothing embedded
    assert again.unchanged == len(records) and again.added == 0 and len(offered) == len(records)


def test_held_passages_are_not_embedded_again(make_collection, embedder, tmp_path):
    col = make_collection()
    records, _ = collect([PDF])
    ahead = embed_ahead.EmbedAhead(col, embedder, "prompt")
    ingest_paths([PDF], col, embedder, progress=False)
    for r in records:
        ahead.offer(r)
    assert ahead.finish() == {} and ahead.model is None  # all held: the model was never needed
