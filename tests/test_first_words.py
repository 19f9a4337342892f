"""The answer's first words are released before its first sentence ends (issue 23: time to the first byte), and
only where that is safe: plain words that no role label, prompt markup, special token, citation or fence could
begin; the cleaned text is the same for any chunking and as the one-shot `clean`."""

from __future__ import annotations

import random

import pytest

from rag.postprocess import Cleaner, clean

FORBIDDEN = ("<reference", "<memory", "<exemplar", "</", "<|im_start|>", "<|im_end|>", "The user said", "I answered")


def pieces(text: str, chunks: list[str] | None = None, reason: str = "stop", name: str = "") -> list[str]:
    """What a streaming Cleaner releases for `text` fed in `chunks` (default: word-sized tokens)."""
    c = Cleaner(n_sources=3, name=name)
    out = [c.feed(ch) for ch in (chunks if chunks is not None else tokens(text))]
    out.append(c.finish(reason))
    return out


def tokens(text: str) -> list[str]:
    """`text` cut as a BPE model emits it: each word with the space before it."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def test_the_opening_words_come_out_before_the_first_sentence_ends() -> None:
    out = pieces("A few habits make the biggest difference. Keep a fixed wake-up time.")
    assert out[:3] == ["", "", "A few"]  # "A", " few": released once " habits" shows that "few" is whole
    assert "".join(out) == "A few habits make the biggest difference. Keep a fixed wake-up time."
    assert out[3:7] == ["", "", "", ""]  # the rest of the sentence waits for its end, as before
    assert out[7] == " habits make the biggest difference."  # once " Keep" shows the sentence ended


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The user said: how? I answered: so. Fine, thanks.", "Fine, thanks."),  # a reproduced memory
        ("I answered: yes. It is fine.", "It is fine."),
        ("Answer: it is blue.", "it is blue."),  # a role label at the start
        ("Shvayambhu Bot: it is blue.", "it is blue."),  # the assistant's own (two-word) name
        ("User: and why? Assistant: no.", "no."),  # an echoed question, then a role label
        ("<|im_start|>assistant\nIt is blue.", "It is blue."),
        ('<reference>\n<exemplar n="1">\nQ: a\nA: b\n</exemplar>\n</reference>\n\nIt is blue.', "It is blue."),
        ("[2] It is blue.", "[1] It is blue."),  # a citation opens it: renumbered, not released early
        ("```\nx = 1\n```", "```\nx = 1\n```"),
        ("--- end of the reference ---\nIt is blue.", "It is blue."),
    ],
)
def test_nothing_that_could_be_a_label_or_markup_is_released_early(text: str, expected: str) -> None:
    for chunks in (tokens(text), list(text)):
        out = pieces(text, chunks, name="Shvayambhu Bot")
        assert "".join(out) == expected == clean(text, n_sources=3, name="Shvayambhu Bot")[0]
        first = next((p for p in out if p), "")
        assert expected.startswith(first)
        for bad in FORBIDDEN:
            assert bad not in "".join(out)


def test_the_memory_label_is_waited_out_and_a_sentence_that_only_starts_like_it_is_not() -> None:
    out = pieces("The user said that it works. Good.")
    assert [p for p in out if p][0] == "The user said that"  # four words: no colon can make it a label now
    assert "".join(out) == "The user said that it works. Good."


def test_a_cut_inside_the_first_sentence_keeps_it_and_later_cut_sentences_still_go() -> None:
    assert "".join(pieces("A few habits make the", reason="length")) == "A few habits make the"
    text = "Keep a fixed time. The second one was cut off in the"
    assert "".join(pieces(text, reason="length")) == "Keep a fixed time."
    assert clean(text, done_reason="length")[0] == "Keep a fixed time."


def test_a_closing_tag_in_the_first_sentence_still_ends_the_answer() -> None:
    out = pieces("Keep a wake-up time.</exemplar>\n</reference> more")
    assert "".join(out) == "Keep a" == clean("Keep a wake-up time.</exemplar>\n</reference> more")[0]


def test_a_repeated_first_sentence_is_still_dropped_and_its_halves_are_not() -> None:
    assert clean("very good very good. very good very good.")[0] == "very good very good."
    text = "Sleep comes sooner in the dark. Sleep comes sooner in the dark. Bye."
    assert clean(text)[0] == "Sleep comes sooner in the dark. Bye."


def test_any_chunking_gives_the_same_text() -> None:
    rng = random.Random(23)
    words = [
        "A few",
        "habits",
        "make",
        "the user said",
        "The user said:",
        "I answered:",
        "Answer:",
        "well,",
        "wake-up",
        "it's",
        "[2]",
        "<|im_end|>",
        "</exemplar>",
        "\n",
        "  ",
        "done.",
        "Q: what?",
        "```",
        "e\u0301",
        "4.",
    ]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 14)))
        for reason in ("stop", "length"):
            ref, _ = clean(text, done_reason=reason, n_sources=3)
            chunks, i = [], 0
            while i < len(text):
                j = i + rng.randint(1, 7)
                chunks.append(text[i:j])
                i = j
            assert "".join(pieces(text, chunks, reason)) == ref, text
