"""Documents (PDF, DOCX, PPTX, HTML, EPUB) to Markdown through markitdown, page by page where pages exist.

markitdown is imported only when a document is converted, so the CLI starts without it. A PDF keeps its
pages, each converted as markitdown converts it alone, in one parse (ingest.pdf_text); a PPTX keeps its slide
numbers as pages. A web page loses its navigation chrome (nav, header, footer, aside, forms) before conversion.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError

DOCUMENT_EXTENSIONS = (".pdf", ".docx", ".pptx", ".html", ".htm", ".epub")
CHROME = ("nav", "aside", "form", "noscript", "script", "style", "template", "iframe", "button")
PAGE_CHROME = ("header", "footer")  # a site's banner and footer; an article's own header (its title) is kept
CHROME_ROLES = ("navigation", "banner", "contentinfo", "search", "complementary")
_SLIDE = "<!-- Slide number: "
DOCUMENTS_EXTRA = "needs the [documents] extra: pip install 'shvayambhu[documents]'"  # markitdown is optional


class Unreadable(ShvayambhuError, ValueError):
    """A document that holds no text we can store; `reason` is the short why for the skipped-files list."""

    def __init__(self, path: Path, reason: str, hint: str = ""):
        super().__init__(f"{path}: {reason}" + (f"; {hint}" if hint else ""))
        self.reason = reason


@dataclass(frozen=True)
class Page:
    """Markdown of one page (PDF page, PPTX slide) or of the whole document (`number` None)."""

    number: int | None
    markdown: str
    no_text: bool = False  # a PDF page with content but no text layer (a scanned page): nothing of it is stored


def file_hash(path: Path) -> str:
    """A digest of a document's bytes: an unchanged document is not converted again on re-ingest."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:32]


def convert(path: Path) -> list[Page]:
    """`path` as Markdown pages in page order; raises Unreadable for an encrypted, damaged or text-less document."""
    return sorted(convert_pages(path), key=lambda p: p.number or 0)


def convert_pages(path: Path) -> Iterator[Page]:
    """`path` as Markdown pages: a PDF's pages without a text layer first, then its pages a few at a time as they
    are converted (so the caller can work on them meanwhile). Raises Unreadable for an encrypted or text-less
    document before any page, and for one that cannot be converted when it is met."""
    if path.suffix.lower() == ".pdf":
        if not _converters_installed():
            raise Unreadable(path, DOCUMENTS_EXTRA)
        return _pdf(path, path.read_bytes())
    return iter(_convert_whole(path))


def _convert_whole(path: Path) -> list[Page]:
    suffix = path.suffix.lower()
    if not _converters_installed():
        raise Unreadable(path, DOCUMENTS_EXTRA)
    data = path.read_bytes()
    try:
        if suffix in (".html", ".htm"):
            return [Page(None, _html(data))]
        markdown = _converter(suffix).convert(io.BytesIO(data), _info(suffix)).markdown
    except Unreadable:
        raise
    except Exception as e:  # the converters raise anything from zipfile, lxml or pdfminer on a damaged file
        raise Unreadable(path, f"cannot convert it ({type(e).__name__}: {str(e)[:120]})") from e
    if suffix == ".pptx":
        return _slides(markdown)
    return [Page(None, markdown)]


def _converters_installed() -> bool:
    """Whether markitdown (the optional [documents] extra of pyproject.toml) can be imported."""
    try:
        return importlib.util.find_spec("markitdown") is not None
    except (ImportError, ValueError):
        return False


def _info(suffix: str) -> Any:
    from markitdown import StreamInfo

    return StreamInfo(extension=suffix)


def _converter(suffix: str) -> Any:
    from markitdown import converters

    return {
        ".docx": converters.DocxConverter,
        ".pptx": converters.PptxConverter,
        ".epub": converters.EpubConverter,
        ".html": converters.HtmlConverter,
    }[suffix]()


def _pdf(path: Path, data: bytes) -> Iterator[Page]:
    """PDF pages: encryption and a missing text layer found first (pdfium, fast), then each page's Markdown as it
    is parsed (ingest.pdf_text), so its passages can be embedded while the later pages are read."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():
            raise Unreadable(path, "encrypted", "remove its password (print it to a new PDF) and ingest that") from e
        raise Unreadable(path, f"damaged PDF ({e})") from e
    try:
        counts = [_char_count(doc[i]) for i in range(len(doc))]
    finally:
        doc.close()
    if not any(chars for chars, _ in counts):
        raise Unreadable(path, "no text layer: OCR it first", "e.g. `ocrmypdf in.pdf out.pdf`")
    return _pdf_pages(path, data, counts)


def _pdf_pages(path: Path, data: bytes, counts: list[tuple[int, bool]]) -> Iterator[Page]:
    from ingest.pdf_text import pdf_pages

    scanned = {n for n, (chars, drawn) in enumerate(counts, 1) if not chars and drawn}
    try:
        yield from (Page(n, "", no_text=True) for n in sorted(scanned))
        for n, text in pdf_pages(data):
            if text.strip() and n not in scanned:
                yield Page(n, text)
    except Unreadable:
        raise
    except Exception as e:  # pdfminer raises anything on a damaged page
        raise Unreadable(path, f"cannot convert it ({type(e).__name__}: {str(e)[:120]})") from e


def _char_count(page: Any) -> tuple[int, bool]:
    """(characters in the page's text layer, whether anything is drawn on it)."""
    text = page.get_textpage()
    try:
        return text.count_chars(), any(True for _ in page.get_objects(max_depth=2))
    finally:
        text.close()
        page.close()


def _slides(markdown: str) -> list[Page]:
    """A PPTX's Markdown cut at markitdown's slide markers, each slide a page."""
    pages = []
    for part in markdown.split(_SLIDE)[1:]:
        number, _, body = part.partition(" -->")
        pages.append(Page(int(number) if number.strip().isdigit() else None, body.strip("\n")))
    return pages or [Page(None, markdown)]


def _html(data: bytes) -> str:
    """A web page's main content as Markdown: chrome removed, <main> or <article> kept when the page has one."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(list(CHROME)):
        tag.decompose()
    for tag in soup(list(PAGE_CHROME)):
        if tag.find_parent(["article", "main"]) is None:
            tag.decompose()
    for tag in soup.find_all(attrs={"role": list(CHROME_ROLES)}):
        tag.decompose()
    main = soup.find("main") or soup.find(attrs={"role": "main"}) or soup.find("article")
    body = str(main) if main is not None else str(soup.body or soup)
    html = f"<html><body>{body}</body></html>"
    return _converter(".html").convert_string(html).markdown
