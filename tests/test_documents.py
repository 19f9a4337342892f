"""Documents: PDF pages, DOCX/HTML headings, PPTX slides through markitdown; scans and locked files skipped and
named; the right passage found for questions whose answer is on a known page or under a known heading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from index.retrieve import search
from ingest.documents import Unreadable, convert
from ingest.pipeline import collect, ingest_paths
from ingest.readers import read_path

DOCS = Path(__file__).resolve().parent / "data" / "docs"
GOOD = ("ferry_manual.pdf", "garden_handbook.docx", "quarterly_review.pptx", "sourdough.html")


def _questions() -> list[tuple[str, str, int | str]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_docs", DOCS / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.QUESTIONS


@pytest.fixture(scope="module")
def good_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("docs")
    for name in GOOD:
        shutil.copy(DOCS / name, d / name)
    return d


def test_pdf_pages_kept_with_spans_in_the_page() -> None:
    pages = convert(DOCS / "ferry_manual.pdf")
    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
    assert "250 running hours" in pages[3].markdown and "250 running hours" not in pages[2].markdown
    assert "| Port Alder to Gull Island" in pages[1].markdown  # the timetable came out as a Markdown table
    records, rejections = collect([DOCS / "ferry_manual.pdf"])
    assert not rejections and {r.meta["passage"]["page"] for r in records} == {1, 2, 3, 4, 5}
    for r in records:
        span = r.meta["passage"]
        assert pages[span["page"] - 1].markdown[span["start"] : span["end"]] == r.response
        assert r.prompt.startswith("ferry manual: ") and f"page {span['page']}" in r.prompt


def test_docx_html_pptx_headings_and_slides() -> None:
    docx, _ = collect([DOCS / "garden_handbook.docx"])
    headings = {r.meta["passage"]["heading"] for r in docx}
    assert "Garden club handbook > Plots > Watering" in headings and "Garden club handbook > Membership" in headings
    watering = next(r for r in docx if r.meta["passage"]["heading"].endswith("Watering"))
    assert "before 9 in the morning" in watering.response and "hosepipe ban" in watering.response  # list kept

    html, _ = collect([DOCS / "sourdough.html"])
    text = "\n".join(r.response for r in html)
    assert {r.meta["passage"]["heading"] for r in html} >= {"Keeping a sourdough starter > Feeding"}
    for chrome in ("Subscribe", "Popular posts", "Advertisement", "Copyright", "Privacy", "analytics", "Bread, mostly"):
        assert chrome not in text, chrome  # navigation, sidebar, footer, site header and scripts are gone
    assert "once a week" in text

    slides, _ = collect([DOCS / "quarterly_review.pptx"])
    assert {r.meta["passage"]["page"] for r in slides} == {1, 2, 3}
    assert any("12 percent" in r.response and r.meta["passage"]["heading"] == "Sales" for r in slides)


def test_scans_and_locked_files_skipped_and_named(tmp_path: Path, make_collection, embedder) -> None:
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    for name in ("scanned.pdf", "locked.pdf", "sourdough.html"):
        shutil.copy(DOCS / name, tmp_path / name)
    (tmp_path / "a.xyz").write_text("what is this", encoding="utf-8")
    (tmp_path / ".hidden.xyz").write_text("passed over", encoding="utf-8")
    col = make_collection()
    summary = ingest_paths([tmp_path], col, embedder, progress=False)
    assert summary.skipped_line() == (
        "skipped 3: a.xyz (unsupported type), locked.pdf (encrypted), scanned.pdf (no text layer: OCR it first)"
    )
    assert [s["reason"] for s in summary.to_dict()["skipped"]][1:] == ["encrypted", "no text layer: OCR it first"]
    sources = {m["source"] for m in col.get(include=["metadatas"])["metadatas"]}
    assert sources == {str((tmp_path / "sourdough.html").resolve())} and summary.added == col.count() > 0
    with pytest.raises(Unreadable, match="no text layer: OCR it first"):  # named alone to a reader: a clear error
        list(read_path(tmp_path / "scanned.pdf"))


def test_right_passage_in_top_3(good_docs: Path, make_collection, embedder, monkeypatch) -> None:
    col = make_collection()
    ingest_paths([good_docs], col, embedder, progress=False)
    with monkeypatch.context() as m:  # re-ingest of unchanged documents converts nothing and adds nothing
        m.setattr("ingest.documents.convert", lambda path: pytest.fail(f"{path} converted again"))
        again = ingest_paths([good_docs], col, embedder, progress=False)
    assert again.added == again.updated == 0 and again.unchanged == col.count()
    found = 0
    for question, file, where in _questions():
        hits = search(col, embedder, question, k=3, mode="dense")
        found += any(
            Path(h.metadata["source"]).name == file and where in (h.metadata.get("page"), h.metadata.get("heading"))
            for h in hits
        )
    assert found / len(_questions()) >= 0.9

    html = good_docs / "sourdough.html"  # an edited document is converted again and replaces its passages
    html.write_text(html.read_text(encoding="utf-8").replace("once a week", "every ten days"), encoding="utf-8")
    edited = ingest_paths([good_docs], col, embedder, progress=False)
    assert edited.updated + edited.added == 1 and edited.removed == 0
    stored = col.get(where={"source": str(html.resolve())}, include=["metadatas"])["metadatas"]
    assert any("every ten days" in m["response"] for m in stored) and not any(
        "once a week" in m["response"] for m in stored
    )
    assert len({m["file_hash"] for m in stored}) == 1  # the unchanged passages carry the new digest too


def test_cli_ingest_json_lists_skipped_and_search_names_the_place(run_cli, tmp_path: Path) -> None:
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    shutil.copy(DOCS / "ferry_manual.pdf", tmp_path / "ferry_manual.pdf")
    shutil.copy(DOCS / "locked.pdf", tmp_path / "locked.pdf")
    code, out, err = run_cli("ingest", str(tmp_path), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["skipped"] == [{"file": str((tmp_path / "locked.pdf").resolve()), "reason": "encrypted"}]
    code, out, err = run_cli("ingest", str(tmp_path))
    assert code == 0 and "skipped 1: locked.pdf (encrypted)" in out, err
    code, out, err = run_cli("search", "How often are the engine oil and filters changed?", "-k", "1")
    assert code == 0 and "in: ferry_manual.pdf, page 4" in out, err
    code, out, err = run_cli("ask", "How often is the engine oil changed?", "--backend", "ollama", "--json", "-k", "2")
    assert code == 0, err
    sources = json.loads(out)["sources"]
    top = next(s for s in sources if s["file"].endswith("ferry_manual.pdf"))
    assert top["page"] == 4 and top["start"] < top["end"] and "heading" in top
    code, out, err = run_cli("ask", "How often is the engine oil changed?", "--backend", "ollama", "-k", "2")
    assert code == 0 and "ferry_manual.pdf, page 4 - " in out, err


def _epub(path: Path) -> None:
    """A two-chapter EPUB, written by hand: container, package and two XHTML chapters."""
    import zipfile

    ns = 'xmlns="http://www.w3.org/1999/xhtml"'
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        z.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Lighthouse notes</dc:title>'
            '<dc:identifier id="id">x</dc:identifier></metadata><manifest>'
            '<item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="c2" href="c2.xhtml" media-type="application/xhtml+xml"/></manifest>'
            '<spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>',
        )
        z.writestr("OEBPS/c1.xhtml", f"<html {ns}><body><h1>The lamp</h1><p>It turns every 12 s.</p></body></html>")
        z.writestr("OEBPS/c2.xhtml", f"<html {ns}><body><h1>The keeper</h1><p>She climbs 112 steps.</p></body></html>")


def test_epub_chapters_and_a_damaged_docx(tmp_path: Path) -> None:
    _epub(tmp_path / "lighthouse.epub")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    skipped: list = []
    records, _ = collect([tmp_path], skipped=skipped)
    assert {r.meta["passage"]["heading"]: r.response for r in records}["The keeper"] == "She climbs 112 steps."
    assert [(Path(s.file).name, s.reason.split(" (")[0]) for s in skipped] == [("broken.docx", "cannot convert it")]


def test_a_scanned_page_in_a_pdf_with_text_is_named(make_collection, embedder) -> None:
    records, rejections = collect([DOCS / "half_scanned.pdf"])
    assert [r.meta["passage"]["page"] for r in records] == [1]
    assert [str(r).split(": ", 1)[1] for r in rejections] == ["page 2 has no text layer: OCR it first"]  # 3 is empty
    col = make_collection()
    first = ingest_paths([DOCS / "half_scanned.pdf"], col, embedder, progress=False)
    again = ingest_paths([DOCS / "half_scanned.pdf"], col, embedder, progress=False)  # from the store: still named
    assert (first.added, again.unchanged) == (1, 1) and first.rejections == again.rejections == rejections
