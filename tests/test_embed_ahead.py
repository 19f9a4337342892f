"""A PDF converted a few pages at a time, its passages embedded while the later pages convert
(ingest.documents.convert_pages, ingest.embed_ahead): the same pages as one whole-file conversion, the same
records and vectors as embedding them at the end, and nothing embedded twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest import documents, embed_ahead, pipeline
from ingest.pipeline import collect, ingest_paths

DOCS = Path(__file__).resolve().parent / "data" / "docs"
PDF = DOCS / "ferry_manual.pdf"  # 5 pages


@pytest.fixture
def small_groups(monkeypatch):
    monkeypatch.setattr(documents, "PDF_GROUP", 2)  # 5 pages: groups 1-2, 3-4, 5


def test_pages_in_groups_are_the_whole_files_pages(monkeypatch) -> None:
    monkeypatch.setattr(documents, "PDF_GROUP", 100)
    whole = list(documents.convert_pages(PDF))  # one conversion of the file (page by page: it has a table)
    monkeypatch.setattr(documents, "PDF_GROUP", 2)
    pages = list(documents.convert_pages(PDF))  # pages 1-2 (the table: page by page), 3-4 together, 5
    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
    assert [p.markdown.strip() for p in pages] == [p.markdown.strip() for p in whole]
    assert "| Port Alder to Gull Island" in pages[1].markdown and "250 running hours" in pages[3].markdown


def test_passages_embedded_while_later_pages_convert(small_groups, monkeypatch, make_collection, embedder, tmp_path):
    converted: list[int] = []  # groups converted so far, seen at each passage offered to the embedder
    pages = documents._pages

    def counting(pdfium, doc, indices):
        converted.append(indices[0])
        return pages(pdfium, doc, indices)

    monkeypatch.setattr(documents, "_pages", counting)
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
    assert offered and offered[0] < len(converted) == 5  # the first passages went while pages 3-5 waited
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
