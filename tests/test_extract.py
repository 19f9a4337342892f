"""Extractive answers: a factoid question answered by the phrase of a passage's sentence, quoted with it (issue
"Honest answers", point 2: an answer is at most what the question needs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.consciousness.extract import answer_span, kind_of
from rag.consciousness.focus import sentences
from tests.test_honest_prompts import assistant, notes_home

CASES = [
    ("How long does a worker bee live in summer?", "In summer a worker lives about six weeks.", "about six weeks"),
    (
        "Who decoded the waggle dance?",
        "The dance was decoded by the Austrian scientist Karl von Frisch, who shared the Nobel Prize in 1973.",
        "Karl von Frisch",
    ),
    (
        "When did the line close to passengers?",
        "The line closed to passengers in 1963 and was reopened by volunteers in 1979.",
        "1963",
    ),
    (
        "Where does the choir rehearse?",
        "The Tidewater Community Choir rehearses on Wednesdays from 7.30 to 9.30 pm in St Brendan's Hall.",
        "St Brendan's Hall",
    ),
    ("How many stamps were on a sheet?", "Each sheet held 240 stamps in 20 rows of 12.", "240"),
    ("Where should the jug be kept in warm weather?", "In warm weather, keep the jug in the fridge.", "in the fridge"),
]


@pytest.mark.parametrize(("question", "sentence", "expected"), CASES)
def test_the_phrase_that_answers_is_a_span_of_the_sentence(question: str, sentence: str, expected: str):
    span = answer_span(question, sentence)
    assert span is not None and span.text == expected
    assert sentence[span.start : span.end] == span.text  # faithful by construction
    assert 0.0 < span.fit <= 1.0


def test_questions_that_need_an_explanation_get_no_phrase():
    assert kind_of("How do I reset the router?") is None
    assert kind_of("Why was European airspace closed?") is None
    assert answer_span("Explain the waggle dance.", "The waggle dance tells bees where food is.") is None
    assert kind_of("In which year did the railway reach Brackenford?") == "date"
    assert kind_of("For how long was the airspace closed?") == "number"


def test_a_full_stop_inside_a_number_does_not_end_a_sentence():
    text = "The choir rehearses from 7.30 to 9.30 pm. The main mirror is 1.2-metre wide! Is it? Yes."
    assert [text[a:b] for a, b in sentences(text)] == [
        "The choir rehearses from 7.30 to 9.30 pm.",
        "The main mirror is 1.2-metre wide!",
        "Is it?",
        "Yes.",
    ]


@pytest.mark.slow
def test_a_factoid_question_is_answered_with_the_phrase_and_its_quoted_sentence(tmp_path: Path):
    """Through the full layer (streamed and not, the same): the answer is the phrase, the first source is the
    note it came from, used, quoting the whole sentence; grounded, and no model call was needed. With
    `[workspace] extractive = false` the model writes the answer."""
    home = notes_home(tmp_path)
    a = assistant(home, backend="mlx", mlx={"max_tokens": 16})
    ans = a.ask("What time does the chess club meet?", use_memory=False)
    assert ans.done_reason == "extract" and ans.answer == "7 pm", ans.answer
    first = ans.sources[0]
    assert first.prompt == "Chess club" and first.used and first.number == 1
    assert first.quote == "The chess club meets on Wednesday evenings at 7 pm in the library annex."
    assert ans.grounded and ans.to_dict()["sources"][0]["quote"] == first.quote
    assert "".join(a.stream("What time does the chess club meet?", use_memory=False)) == ans.answer
    off = assistant(home, backend="mlx", mlx={"max_tokens": 16}, workspace={"extractive": False})
    assert off.ask("What time does the chess club meet?", use_memory=False).done_reason != "extract"
    weak = a.ask("Who wrote the Iliad?", use_memory=False)  # nothing in the notes: no phrase is taken from them
    assert weak.low_confidence and weak.done_reason != "extract"
