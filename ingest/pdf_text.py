"""A PDF's pages as Markdown in one parse: for each page, what markitdown's PdfConverter gives for it alone.

markitdown parses a prose PDF twice: pdfplumber first, to guess whether a page is a borderless form or table
(building a dictionary of some twenty attributes for every character, and extracting each page's text only to
throw it away), then pdfminer again over the whole file for the prose. Here pdfminer lays each page out once
(the LAParams its `extract_text` uses); the same layout gives the prose text and the characters' positions, from
which pdfplumber's public `extract_words` finds the words for markitdown's own table guess. Under half the time on
a prose PDF (bench/RESULTS.md). A page this shortcut is not sure of (rotated, a media box off the origin, sideways
text) goes through pdfplumber as markitdown does. tests/test_embed_ahead.py checks every page against markitdown's
conversion of that page alone, so a markitdown or pdfplumber upgrade that changes either says so.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class _Positions:
    """What markitdown's table guess reads of a pdfplumber page: its width and its words."""

    width: float
    chars: list[dict[str, Any]]

    def extract_words(self, **options: Any) -> list[dict[str, Any]]:
        from pdfplumber.utils import extract_words

        return extract_words(self.chars, **options)


def pdf_pages(data: bytes) -> Iterator[tuple[int, str]]:
    """(page number from 1, Markdown) for each page of the PDF in `data`, as each is laid out."""
    from pdfminer.converter import PDFPageAggregator
    from pdfminer.layout import LAParams
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
    from pdfminer.pdfpage import PDFPage

    resources = PDFResourceManager(caching=True)
    device = PDFPageAggregator(resources, laparams=LAParams())
    interpreter = PDFPageInterpreter(resources, device)
    for number, page in enumerate(PDFPage.get_pages(io.BytesIO(data)), 1):
        interpreter.process_page(page)
        layout = device.get_result()
        chars = _chars(layout) if _plain(page) else None
        if chars is None:
            yield number, _through_pdfplumber(data, number)
        else:
            yield number, _markdown(_Positions(layout.width, chars), layout)


def _markdown(positions: Any, layout: Any) -> str:
    # markitdown's own table guess and numbering clean-up (private: the pin in pyproject.toml and the contract
    # test keep them honest).
    from markitdown.converters._pdf_converter import (
        _extract_form_content_from_words,
        _merge_partial_numbering_lines,
    )

    form = _extract_form_content_from_words(positions)
    text = form.strip() if form is not None and form.strip() else _layout_text(layout)
    return _merge_partial_numbering_lines(text)


def _plain(page: Any) -> bool:
    """A page whose pdfminer coordinates are pdfplumber's flipped: not rotated, its media box at the origin."""
    return not (page.rotate or 0) % 360 and tuple(page.mediabox[:2]) == (0, 0)


def _chars(layout: Any) -> list[dict[str, Any]] | None:
    """The laid-out page's characters as pdfplumber's `extract_words` reads them (top-down coordinates, in the
    layout's order); None when one is set sideways (pdfplumber groups those apart, by its own order)."""
    from pdfminer.layout import LTChar, LTContainer

    height = layout.height
    chars: list[dict[str, Any]] = []

    def walk(item: Any) -> bool:
        for child in item:
            if isinstance(child, LTChar):
                if not child.upright:
                    return False
                top = height - child.y1
                chars.append(
                    {
                        "text": child.get_text(),
                        "x0": child.x0,
                        "x1": child.x1,
                        "top": top,
                        "bottom": height - child.y0,
                        "doctop": top,
                        "upright": True,
                    }
                )
            elif isinstance(child, LTContainer) and not walk(child):
                return False
        return True

    return chars if walk(layout) else None


def _through_pdfplumber(data: bytes, number: int) -> str:
    """Page `number` read through pdfplumber (with the same layout analysis), as markitdown reads it."""
    import pdfplumber

    with pdfplumber.open(io.BytesIO(data), pages=[number], laparams={}) as pdf:
        page = pdf.pages[0]
        try:
            return _markdown(page, page.layout)
        finally:
            page.close()


def _layout_text(page: Any) -> str:
    """A laid-out page's text as pdfminer's TextConverter writes it: each text box followed by a newline."""
    from pdfminer.layout import LTContainer, LTText, LTTextBox

    out: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, LTContainer):
            for child in item:
                walk(child)
        elif isinstance(item, LTText):
            out.append(item.get_text())
        if isinstance(item, LTTextBox):
            out.append("\n")

    walk(page)
    return "".join(out)
