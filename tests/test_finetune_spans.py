"""Fine-tuning questions written around short answer spans, and an evaluation set kept out of the training data."""

from __future__ import annotations

import json

from training.data import CorpusRecord
from training.raft_data import Item, brief, build_examples, plan_items
from training.span_questions import span_questions

PASSAGE = (
    "The Harrow Bridge was opened in 1887 by Queen Victoria. The ferry company has 12 boats. About 40 percent of "
    "visitors arrive by train, and tickets cost $15 for adults. The museum opens at 9 am on weekdays. Its "
    "lighthouse was built in 1792. Tidemouth lies on the River Esk, and the harbour was dredged on 3 March 1921."
)


def test_span_questions_ask_for_a_span_of_their_sentence():
    got = span_questions(PASSAGE, "Tidemouth", limit=20)
    pairs = {(q.question, q.answer) for q in got}
    assert {
        ("How many boats does the ferry company have?", "12 boats"),
        ("When was Tidemouth's lighthouse built?", "1792"),  # "Its" stands for the passage's title
        ("When was the harbour dredged?", "3 March 1921"),
        ("Who was the Harrow Bridge opened in 1887 by?", "Queen Victoria"),
        ("About what percentage of visitors arrive by train?", "40 percent"),
        ("Tickets cost how much for adults?", "$15"),
        ("The museum opens at what time on weekdays?", "9 am"),
    } <= pairs
    for q in got:
        assert q.sentence in PASSAGE and q.answer in q.sentence and q.answer not in q.question
    assert span_questions(PASSAGE, "Tidemouth", limit=3) == got[:3]


def test_span_questions_leave_out_what_they_cannot_ask_well():
    assert span_questions("Its lighthouse was built in 1792 by the harbour board.") == []  # "its": of what?
    listed = span_questions("Four chords in a loop are common, such as C, G, Am and F in many songs.")
    assert not any(q.type == "name" for q in listed)  # list items
    assert span_questions("Aim for a short nap of 10 to 20 minutes after lunch each day.") == []  # half a range
    assert [q.answer for q in span_questions("Aim for a short nap of 20 minutes after lunch each day.")] == [
        "20 minutes"
    ]
    assert span_questions("A much-cited 2014 study found that typed notes were worse.") == []  # a modifier


def test_plan_keeps_the_evaluation_set_out():
    evaluated = "The Wool Hall on Cross Street was finished in 1462 and is still the largest building."
    recs = [
        CorpusRecord(f"r{i}", f"What is the story of town {i}?", f"Town {i} has {i + 3} bridges over the river.")
        for i in range(40)
    ]
    recs.append(CorpusRecord("dev", "Brackenford", f"Brackenford grew rich on wool. {evaluated}", kind="text"))
    recs.append(CorpusRecord("asked", "When was the Wool Hall finished?", "It was finished long ago, people say."))
    plan = plan_items(
        recs,
        spans=4,
        abstain_share=0.0,
        exclude_questions=["When was the Wool Hall finished?"],
        exclude_texts=[f"Brackenford is a market town. {evaluated}"],
    )
    asked = {i.record for i in plan.items}
    assert "dev" not in asked and "asked" not in asked and plan.info["evaluation_records_dropped"] == 1
    spans = [i for i in plan.items if i.kind == "span"]
    assert len(spans) == plan.info["span_questions"] == len({i.record for i in spans}) > 30  # one a town
    assert all(i.answer in i.evidence and "has how many bridges" in i.question for i in spans)


def test_a_span_example_needs_its_sentence_in_the_prompt():
    item = Item("How many boats does the ferry company have?", "12 boats", "r1", "span", "answer", "train",
                "The ferry company has 12 boats.")  # fmt: skip
    messages = [{"role": "user", "content": "q"}]

    def shows(text: str):
        return lambda question: (messages, {"r1": text})

    made, skipped = build_examples([item], shows("Ferries: the ferry company has 12 boats. More text."), "no")
    assert [(e.target, e.kind) for e in made] == [("12 boats", "span")]
    made, skipped = build_examples([item], shows("The rival line has 12 boats."), "no")  # the span, not its sentence
    assert made == [] and skipped["gold_not_shown"] == 1


def test_excluded_reads_an_evaluation_set(tmp_path):
    from rag.cli.finetune import excluded

    doc = {
        "version": "v2.0",
        "data": [
            {
                "title": "Harrow",
                "paragraphs": [
                    {
                        "context": "Harrow has a bridge opened in 1887.",
                        "qas": [
                            {
                                "id": "1",
                                "question": "When was the bridge opened?",
                                "answers": [{"text": "1887", "answer_start": 30}],
                                "is_impossible": False,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(doc))
    got = excluded([path])
    assert got["exclude_questions"] == ["When was the bridge opened?"]
    assert got["exclude_texts"] == ["Harrow has a bridge opened in 1887."]


def test_span_examples_are_oversampled_in_the_train_split_only():
    import pytest

    from rag.cli.finetune import oversampled
    from training.data import TrainingError
    from training.raft_data import Example

    def ex(role, kind, split="train"):
        return Example(f"{role}{kind}{split}", [], "t", role, kind, "r", split)

    examples = [ex("answer", "span"), ex("answer", "pair"), ex("abstain", "span"), ex("anchor", "general")]
    examples.append(ex("answer", "span", "val"))
    assert oversampled(examples, 1) == examples[:4]
    three = oversampled(examples, 3)
    assert [e.question for e in three].count("answerspantrain") == 3 and len(three) == 6
    assert "answerspanval" not in {e.question for e in three}  # validation is never repeated
    with pytest.raises(TrainingError, match="at least 1"):
        oversampled(examples, 0)


def test_a_withheld_question_whose_prompt_still_answers_is_found_elsewhere():
    """A withheld record's question must not learn "not found" where the prompt holds its answer: the span or
    its numbers as written, or a sibling answer in other words; a near miss (another person) stays."""
    from training.raft_data import found_elsewhere

    def span(answer, sentence):
        return Item("q?", answer, "r", "span", "abstain", "train", sentence)

    nap = span("90 minutes", "Aim for a short nap of 10 to 20 minutes or a full 90 minutes.")
    assert found_elsewhere(nap, ["Keep it to 10 to 20 minutes, or go for a full 90."], None, None) == "90 minutes"
    assert found_elsewhere(nap, ["Keep it to 10 to 20 minutes."], None, None) is None
    moon = span("the Moon", "David Scott demonstrated this on the Moon in 1971.")
    assert found_elsewhere(moon, ["In 1971 David Scott showed this on the Moon with a feather."], None, None)
    artist = span("Valletta", "Dario Lindqvist is a glass artist in Valletta, known locally.")
    assert found_elsewhere(artist, ["Dario Haraldsen is a glass artist in Porto, known locally."], None, None) is None

    calls = []

    def similar(text, candidates):
        calls.append((text, candidates))
        return [0.95 if "switching" in c else 0.3 for c in candidates]

    pair = Item("Does multitasking hurt learning?", None, "r", "pair", "abstain", "train")
    sibling = "Usually, yes. What gets called multitasking is mostly fast switching between tasks."
    passage = "Generally yes. Multitasking is mostly rapid switching between tasks."
    assert found_elsewhere(pair, ["Sleep helps.", sibling], passage, None) is None  # no similarity: as written only
    assert found_elsewhere(pair, ["Sleep helps.", sibling], passage, similar) == brief(sibling)  # not the first shown
    assert calls[-1][0] == passage
    assert found_elsewhere(pair, ["Sleep helps memory consolidate."], passage, similar) is None
    assert found_elsewhere(artist, [sibling], None, similar) is None  # a span never goes by similarity
    generated = Item("Why is it that X?", "Multitasking is mostly rapid switching.", "r", "generated", "abstain", "t")
    assert (
        found_elsewhere(generated, [sibling], None, similar)
        == "What gets called multitasking is mostly fast switching between tasks."
    )


def test_a_withheld_question_answers_from_a_sibling_or_says_not_found():
    """The held-out case, taught: a question whose own record is missing answers from a paraphrase in its prompt
    (the brief of the sibling's answer), and says the layer's "not found" when nothing there answers it."""
    messages = [{"role": "user", "content": "q"}]
    sibling = "Use me to understand things, not to decide them. " + "I can explain a test. " * 20
    tips = "Put the point first. Keep it under about eight words."
    prompts = {
        "Should I trust you for medical advice?": {"s1": sibling},
        "Is it safe to fly?": {"s2": "Bins go out."},
        "What makes a good email subject line?": {"s3": tips},  # worded apart from the own answer, asked alike
    }
    items = [Item(q, None, "own", "pair", "abstain", "train") for q in prompts]

    def score(text, candidate):
        if "subject line" in text and "subject line" in candidate:
            return 0.86
        return 0.9 if "understand" in candidate else 0.2

    def similar(text, candidates):
        return [score(text, c) for c in candidates]

    made, counts = build_examples(
        items,
        lambda q: (messages, prompts[q]),
        "NOT FOUND",
        passages={"own": "Use me for understanding."},
        similar=similar,
        questions={"s3": "How do I write an effective subject line for an email?", "s2": "When are bins collected?"},
    )
    assert [(e.role, e.target) for e in made] == [
        ("twin", brief(sibling)),
        ("abstain", "NOT FOUND"),
        ("twin", brief(tips)),
    ]
    assert counts["answered_by_another"] == 2 and len(brief(sibling).split()) <= 41
    longer, _ = build_examples(
        items[:1],
        lambda q: (messages, prompts[q]),
        "NOT FOUND",
        passages={"own": "x"},
        similar=similar,
        answer_words=80,
    )
    assert longer[0].target == brief(sibling, 80) and 60 < len(longer[0].target.split()) <= 80


def test_only_documents_teach_not_found():
    """ "What are emotions?" written from a withheld chat record: its twins answer it in other words, so "not
    found" is no sure target and the question is left out, over its twin or not; written from a withheld
    document (no question of its own), it stays an abstain example. Found as written, either is a twin."""
    messages = [{"role": "user", "content": "q"}]
    twin = "Emotions are fast appraisals of what matters to you right now. They ready the body to act."
    other = "Bins go out on Tuesday mornings before seven."
    evidence = "Emotions are quick judgements about what matters, which prepare you to respond."
    item = Item("What are emotions?", evidence, "own", "generated", "abstain", "train", evidence)
    prompts = {"twin": {"t": twin}, "other": {"o": other}, "own words": {"o": evidence}}

    def similar(text, candidates):
        return [0.85 if "Emotions" in text and "emotions" in c.lower() else 0.1 for c in candidates]  # not 0.9

    def run(key, questions):
        return build_examples(
            [item],
            lambda q: (messages, prompts[key]),
            "NOT FOUND",
            passages={"own": evidence},
            similar=similar,
            questions=questions,
        )

    chat = {"own": "What are emotions for?", "t": "What are emotions, and what are they for?"}
    for key in ("twin", "other"):
        made, counts = run(key, chat)
        assert made == [] and counts["chat_not_found"] == 1 and counts["answered_by_another"] == 0
    made, counts = run("other", {"t": "x"})  # a document
    assert [(e.role, e.target) for e in made] == [("abstain", "NOT FOUND")] and counts["chat_not_found"] == 0
    made, _ = run("twin", {"t": "x"})  # a document passage this close is a near miss: still not found
    assert [e.role for e in made] == ["abstain"]
    made, _ = run("own words", chat)  # its answer sentence shown as written (another record holds it)
    assert [(e.role, e.target) for e in made] == [("twin", evidence)]
