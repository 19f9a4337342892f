"""The sentences of a retrieved passage that answer a question, so a small model reads (and copies) what the
question needs instead of the whole passage.

A sentence is scored by the question's content words it holds (weighted by how rare they are in the passage,
so "the" counts for nothing and "Ostrova" for much) plus, when an embedding function is given, its cosine to
the question. The best `n` sentences are kept in their original order, each with its neighbour when the best
one is too short to stand alone ("It was built in 1932." needs the sentence naming "it").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from rag.consciousness.calibration import content_words

# A sentence ends at . ! ? (and closing quotes or brackets) before a space or the end, or at a line break; a
# full stop inside a number ("7.30 pm", "1.2-metre") or a word ("e.g") does not end one.
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?]+(?![\"'”’)\]]*(?:\s|$)))+(?:[.!?]+[\"'”’)\]]*|\n+|$)")
RUNNER_UP = 0.75  # a second sentence is kept only when it scores at least this share of the best one
MIN_SENTENCE_WORDS = 6  # a best sentence shorter than this brings its neighbour along


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text` (lines count as sentence ends)."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def lexical_scores(question: str, parts: Sequence[str], width: int = 6) -> list[float]:
    """Share of the question's content words found in each part, each word weighted by its rarity among parts;
    words meet on their first `width` letters."""
    q = content_words(question, width)
    if not q:
        return [0.0] * len(parts)
    words = [content_words(p, width) for p in parts]
    n = len(parts)
    idf = {w: math.log(1 + n / (1 + sum(w in ws for ws in words))) + 1.0 for w in q}
    total = sum(idf.values())
    return [sum(idf[w] for w in q & ws) / total for ws in words]


def focus(
    question: str,
    text: str,
    *,
    n: int = 2,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    query_vector: np.ndarray | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """Up to `n` sentences of `text` that best answer `question` (a runner-up only when it scores nearly as well
    as the best), joined in their original order, and their spans.
    A text of `n` sentences or fewer comes back whole. `embed` maps sentences to unit vectors (compared with
    `query_vector`); without it the choice is lexical only."""
    spans = sentences(text)
    if len(spans) <= n:
        return text.strip(), [(spans[0][0], spans[-1][1])] if spans else []
    parts = [text[a:b] for a, b in spans]
    score = np.asarray(lexical_scores(question, parts), dtype=np.float32)
    if embed is not None and query_vector is not None:
        vectors = np.asarray(embed(parts), dtype=np.float32)
        score = score + vectors @ np.asarray(query_vector, dtype=np.float32)
    chosen: set[int] = set()
    order = np.argsort(-score, kind="stable")
    for i in order[:n]:
        if chosen and score[i] < RUNNER_UP * score[order[0]]:
            break  # the question needs the best sentence, not this one too
        chosen.add(int(i))
        if len(parts[i].split()) < MIN_SENTENCE_WORDS and i > 0:
            chosen.add(int(i) - 1)
    keep = sorted(chosen)
    return " ".join(parts[i].strip() for i in keep), [spans[i] for i in keep]
