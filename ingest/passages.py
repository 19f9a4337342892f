"""Passages: Markdown or plain text split along headings and sentences, each with its heading path and span.

A passage is a contiguous slice `text[start:end]` of the text it came from (the file itself for .md/.txt, the
converted Markdown for documents), so its span points at exactly what was stored. Passages never cross a
heading; inside a section, whole sentences (list items, table rows, code lines) are packed up to
PASSAGE_BYTES, and a passage cut for size starts with up to OVERLAP_BYTES of the sentences that ended the one
before it. Only a single sentence over the limit is cut inside, at a space.

The size: all-MiniLM-L6-v2 reads at most 256 word pieces and drops the rest, and a passage is embedded with
its title and heading path in front. 1,000 bytes of English prose is about 160-180 words, about 200-230
word pieces, so a whole passage (and its heading) is seen by the embedder; an answer is a few sentences,
not a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PASSAGE_BYTES = 1000  # most bytes of one passage's text (see the module docstring for why)
OVERLAP_BYTES = 200  # most bytes of whole sentences repeated at the start of a passage cut for size
HEADING_SEP = " > "

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?…。।])[\"'”’)\]]*\s+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


@dataclass(frozen=True)
class Passage:
    """One passage: its text (a slice of the source), heading path, character span and first line (from 1)."""

    text: str
    headings: tuple[str, ...]
    start: int
    end: int
    line: int

    @property
    def heading(self) -> str:
        """The heading path in words, e.g. "Bike log > Tyres" ("" before the first heading)."""
        return HEADING_SEP.join(self.headings)


@dataclass
class _Block:
    start: int
    end: int
    headings: tuple[str, ...]
    kind: str  # "prose", "lines" (list, table, code: one unit a line)


def clean_heading(raw: str) -> str:
    """A heading's words: links as their text, emphasis markers and extra spaces gone."""
    text = _LINK.sub(r"\1", raw)
    text = re.sub(r"[*_`]+", "", text)
    return " ".join(text.split())


def _blocks(text: str, markdown: bool) -> list[_Block]:
    """Blank-line-separated blocks with the heading path above each; headings themselves are not blocks."""
    blocks: list[_Block] = []
    stack: list[tuple[int, str]] = []
    cur: _Block | None = None
    fence = False
    pos = 0
    for raw in text.splitlines(keepends=True):
        start, pos = pos, pos + len(raw)
        line = raw.rstrip("\r\n")
        end = start + len(line)
        if markdown and _FENCE.match(line):
            fence = not fence
        heading = _ATX.match(line) if markdown and not fence else None
        if heading or (not line.strip() and not fence):
            cur = None
            if heading:
                level, title = len(heading.group(1)), clean_heading(heading.group(2))
                stack = [(lvl, t) for lvl, t in stack if lvl < level]
                if title:
                    stack.append((level, title))
            continue
        structured = fence or line.lstrip().startswith(("|", "```", "~~~")) or bool(_LIST_ITEM.match(line))
        headings = tuple(t for _, t in stack)
        if cur is None or cur.headings != headings:
            cur = _Block(start, end, headings, "lines" if structured else "prose")
            blocks.append(cur)
        else:
            cur.end = end
            if structured:
                cur.kind = "lines"
    return blocks


def _units(text: str, block: _Block) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a prose block, or each line of a list, table or code block."""
    body = text[block.start : block.end]
    out: list[tuple[int, int]] = []
    if block.kind == "lines":
        pos = 0
        for line in body.splitlines(keepends=True):
            stripped = line.rstrip("\r\n")
            if stripped.strip():
                out.append((block.start + pos, block.start + pos + len(stripped)))
            pos += len(line)
        return out
    pos = 0
    for m in _SENTENCE_END.finditer(body):
        out.append((block.start + pos, block.start + m.start()))
        pos = m.end()
    if pos < len(body):
        out.append((block.start + pos, block.end))
    return [(s, e) for s, e in out if e > s]


def _size(text: str, start: int, end: int) -> int:
    return len(text[start:end].encode("utf-8"))


def _cut_unit(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """A unit over `limit` bytes cut into pieces under it, at the last space before the limit (else mid-word)."""
    out = []
    while end - start > limit or _size(text, start, end) > limit:  # a char is at least a byte: cheap check first
        head = text[start : start + limit].encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        space = head.rfind(" ")
        cut = start + (space if space > 0 else max(1, len(head)))
        out.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        out.append((start, end))
    return out


def _line_of(text: str, offset: int, cache: list[int]) -> int:
    """1-based line number of `offset` (cache: offsets of each newline, filled once)."""
    if not cache:
        cache.extend(i for i, ch in enumerate(text) if ch == "\n")
        cache.append(len(text) + 1)
    lo, hi = 0, len(cache)
    while lo < hi:
        mid = (lo + hi) // 2
        if cache[mid] < offset:
            lo = mid + 1
        else:
            hi = mid
    return lo + 1


def split_passages(
    text: str, *, markdown: bool = True, limit: int = PASSAGE_BYTES, overlap: int = OVERLAP_BYTES
) -> list[Passage]:
    """`text` as passages: heading-aware (never across a heading), sentence-bounded, at most `limit` bytes each,
    with up to `overlap` bytes of whole sentences carried over where a section is cut for size."""
    sections: list[tuple[tuple[str, ...], list[tuple[int, int]]]] = []
    for block in _blocks(text, markdown):
        units = [piece for s, e in _units(text, block) for piece in _cut_unit(text, s, e, limit)]
        if sections and sections[-1][0] == block.headings:
            sections[-1][1].extend(units)
        else:
            sections.append((block.headings, units))
    out: list[Passage] = []
    lines: list[int] = []
    for headings, units in sections:
        i = 0
        while i < len(units):
            j = i + 1
            while j < len(units) and _size(text, units[i][0], units[j][1]) <= limit:
                j += 1
            start, end = units[i][0], units[j - 1][1]
            out.append(Passage(text[start:end], headings, start, end, _line_of(text, start, lines)))
            if j >= len(units):
                break
            back = j  # the next passage starts with the last sentences of this one, up to `overlap` bytes
            while back - 1 > i and _size(text, units[back - 1][0], units[j - 1][1]) <= overlap:
                back -= 1
            i = back if back < j and _size(text, units[back][0], units[j][1]) <= limit else j
    return out
