"""`eval answers`: the question-set readers, the held-back split, the answer metrics and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.eval import qa_metrics as qm
from rag.eval.squad import (
    ADVERSARIAL,
    ANSWERABLE,
    OUT_OF_CORPUS,
    SquadError,
    load_questions,
    split_articles,
)

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "data" / "answers_tiny.json"
DEV = REPO / "bench" / "data" / "answers" / "dev.json"


def squad(articles: list[dict]) -> dict:
    return {"version": "v2.0", "data": articles}


def write(tmp_path: Path, obj: object, name: str = "q.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return p


# ---- the fixture sets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [TINY, DEV], ids=["tiny", "dev"])
def test_every_gold_span_is_where_answer_start_says(path: Path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    spans = 0
    for art in doc["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                assert qa["is_impossible"] == (not qa["answers"]), qa["id"]
                for a in qa["answers"]:
                    assert para["context"][a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
                    spans += 1
    assert spans > 0
    load_questions(path)  # the reader agrees


def test_the_dev_set_has_the_sizes_the_team_tunes_on():
    counts = load_questions(DEV).counts()
    assert 80 <= counts[ANSWERABLE] <= 120
    assert 20 <= counts[ADVERSARIAL] <= 30
    assert 20 <= counts[OUT_OF_CORPUS] <= 45


# ---- reading ------------------------------------------------------------------------------------------


def test_squad_reader_assigns_kinds_and_never_ingests_held_back_articles():
    qs = load_questions(TINY)
    assert qs.held_back == ["Oakfield Chess Club"] and len(qs.ingested) == 3
    by_id = {q.id: q for q in qs.questions}
    assert by_id["tiny-1-1-1"].kind == ANSWERABLE and by_id["tiny-1-1-1"].answers == ["Miriam Coutts"]
    assert by_id["tiny-1-1-x1"].kind == ADVERSARIAL and by_id["tiny-1-1-x1"].answers == []
    assert {q.kind for q in qs.questions if q.article == "Oakfield Chess Club"} == {OUT_OF_CORPUS}
    records = qs.store_records()
    assert {r["prompt"] for r in records} == set(qs.ingested)
    assert all(r["kind"] == "text" and "Oakfield" not in r["response"] for r in records)


def test_held_back_split_is_deterministic_and_depends_on_the_seed():
    titles = [f"article {i}" for i in range(20)]
    a = split_articles(titles, 0.25, seed=0)
    assert a == split_articles(list(titles), 0.25, seed=0)
    assert len(a[1]) == 5 and set(a[0]).isdisjoint(a[1]) and set(a[0]) | set(a[1]) == set(titles)
    assert split_articles(list(reversed(titles)), 0.25, seed=0)[1] == sorted(a[1], key=titles.index)[::-1]
    assert split_articles(titles, 0.25, seed=1)[1] != a[1]
    assert split_articles(["one", "two"], 0.1)[1] != []  # at least one held back of two or more
    assert split_articles(["one"], 0.25) == (["one"], [])  # never all
    assert split_articles(titles, 0.0) == (titles, [])


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["data"][0].pop("title"), "data[0]: missing field 'title'"),
        (lambda d: d["data"][0]["paragraphs"][0].update(context=""), "data[0].paragraphs[0].context: must be"),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=3),
            "data[0].paragraphs[0].qas[0].answers[0].answer_start: 3 does not point at 'Coutts' (the text is at 7)",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="7"),
            "qas[0].answers[0].answer_start: must be an int",
        ),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(answers=[]), "qas[0].answers: empty"),
        (lambda d: d.pop("data"), "missing field 'data'"),
    ],
)
def test_malformed_squad_names_the_file_and_field(tmp_path: Path, mutate, where: str):
    doc = squad(
        [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "Built by Coutts.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Who built it?",
                                "answers": [{"text": "Coutts", "answer_start": 9}],
                                "is_impossible": False,
                            }
                        ],
                    }
                ],
            }
        ]
    )
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 9
    mutate(doc)
    if "answer_start: 3" in where:  # the hint names where the text really is
        doc["data"][0]["paragraphs"][0]["context"] = "Built: Coutts."
    path = write(tmp_path, doc)
    with pytest.raises(SquadError) as e:
        load_questions(path)
    assert str(path) in str(e.value) and where in str(e.value)


def test_not_json_names_the_line(tmp_path: Path):
    path = write(tmp_path, '{"data": [\n  oops\n]}')
    with pytest.raises(SquadError, match=rf"{path}:2: not valid JSON"):
        load_questions(path)


def test_jsonl_questions(tmp_path: Path):
    lines = [
        {"question": "Who built it?", "answers": ["Coutts"], "context": "Built by Coutts in 1871.", "title": "Tower"},
        {"question": "When?", "answers": "1871", "context": "Built by Coutts in 1871.", "title": "Tower"},
        {"question": "Who paid?", "context": "Built by Coutts in 1871.", "title": "Tower"},
        {"question": "What is the capital of Peru?", "id": "peru"},
        {"question": "Q?", "answers": ["x"], "context": "A passage on another thing, x.", "title": "Other"},
    ]
    path = write(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n\n", "q.jsonl")
    qs = load_questions(path, held_back=0.0)
    kinds = [(q.id, q.kind) for q in qs.questions]
    assert kinds == [
        ("line1", ANSWERABLE),
        ("line2", ANSWERABLE),
        ("line3", ADVERSARIAL),
        ("peru", OUT_OF_CORPUS),
        ("line5", ANSWERABLE),
    ]
    assert [a.title for a in qs.articles] == ["Tower", "Other"] and len(qs.articles[0].paragraphs) == 1
    bad = write(tmp_path, json.dumps({"question": "Q?", "answers": ["nope"], "context": "Other text."}), "b.jsonl")
    with pytest.raises(SquadError, match=rf"{bad}:1: none of the answers occurs in field 'context'"):
        load_questions(bad)
    bad.write_text(json.dumps({"question": "Q?", "answers": ["x"]}), encoding="utf-8")
    with pytest.raises(SquadError, match=r":1: a question with answers needs field 'context'"):
        load_questions(bad)


# ---- metrics ------------------------------------------------------------------------------------------


def test_normalisation_exact_match_and_f1_by_hand():
    assert qm.normalize("The  Cat's hat!") == "cats hat"
    assert qm.exact_match("the Wool Hall.", ["Wool Hall"]) == 1.0
    assert qm.exact_match("Wool Hall on Cross Street", ["Wool Hall"]) == 0.0
    # pred: wool hall on cross street (5), gold: wool hall (2): common 2, P 2/5, R 1 -> F1 = 2*0.4/1.4
    assert qm.token_f1("Wool Hall on Cross Street", ["Wool Hall"]) == pytest.approx(0.8 / 1.4)
    # the best gold counts: "in 1462" vs "1462" -> P 1/2, R 1 -> 2/3
    assert qm.token_f1("in 1462", ["1856", "1462"]) == pytest.approx(2 / 3)
    assert qm.token_f1("x y", ["z"]) == 0.0
    assert qm.token_f1("anything", []) is None and qm.exact_match("a", []) is None
    assert qm.token_f1("the", ["a"]) == 1.0  # both normalise to nothing: equal, as in SQuAD's script
    assert qm.contains_gold("It was built in 1871 by Miriam Coutts.", ["miriam coutts"]) == 1.0
    assert qm.contains_gold("It costs 145 pounds", ["45 pounds"]) == 0.0  # whole tokens only


def test_auroc_ece_and_confident_errors_on_known_inputs():
    assert qm.auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert qm.auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    # pairs (pos, neg): (0.6,0.4)>, (0.6,0.7)<, (0.5,0.4)>, (0.5,0.7)< plus a tie (0.4 vs 0.4) counted half
    assert qm.auroc([0.6, 0.5, 0.4, 0.7, 0.4], [True, True, True, False, False]) == pytest.approx(2.5 / 6)
    assert qm.auroc([0.5, 0.6], [True, True]) is None
    # bins: 0.95 -> bin 9 (acc 1, gap .05), 0.95 -> bin 9; 0.25 -> bin 2 (acc 0, gap .25); 1.0 -> bin 9
    scores, labels = [0.95, 0.95, 0.25, 1.0], [True, False, False, True]
    # bin 9: mean conf (0.95+0.95+1.0)/3 = 0.9667, acc 2/3 -> gap 0.3; weighted 3/4*0.3 + 1/4*0.25 = 0.2875
    assert qm.ece(scores, labels) == pytest.approx(0.75 * (2.9 / 3 - 2 / 3) + 0.25 * 0.25)
    assert qm.ece([1.0, 0.0], [True, False]) == 0.0
    assert qm.wrong_when_confident(scores, labels) == pytest.approx(1 / 3)
    assert qm.wrong_when_confident([0.1], [False]) is None
    coverage, risk = qm.risk_coverage([0.2, 0.9, 0.5], [False, True, False])
    assert coverage == pytest.approx([1 / 3, 2 / 3, 1.0]) and risk == pytest.approx([0.0, 0.5, 2 / 3])
    assert qm.aurc([0.2, 0.9, 0.5], [False, True, False]) == pytest.approx((0 + 0.5 + 2 / 3) / 3)


def test_bootstrap_of_a_statistic_is_seeded_and_brackets_the_value():
    pairs = [(i / 20, i % 3 != 0) for i in range(20)]

    def stat(ps):
        return qm.auroc([p[0] for p in ps], [p[1] for p in ps])

    a, b = qm.bootstrap_stat(pairs, stat, resamples=200), qm.bootstrap_stat(pairs, stat, resamples=200)
    assert a == b and a["lo"] <= a["mean"] <= a["hi"] and a["n"] == 20
    assert qm.bootstrap_stat([], stat)["mean"] is None


@pytest.mark.parametrize(
    "text",
    [
        "I don't know.",
        "I do not know the answer to that.",
        "I\u2019m not sure, sorry.",
        "The documents do not mention the keeper's name.",
        "That is not in the provided context.",
        "The context does not say how many calories it has.",
        "I cannot find this in my notes.",
        "My corpus has nothing on this (confidence 0.08), and I would only be guessing.",
        "There is no information about the wattage in the documents.",
        "The price is not mentioned in the passage.",
        "",
    ],
)
def test_the_abstention_detector_catches_refusals(text: str):
    assert qm.says_it_does_not_know(text)
    assert qm.abstained(text)


@pytest.mark.parametrize(
    "text",
    [
        "Miriam Coutts built it in 1871.",
        "The warranty lasts three years; it does not cover limescale damage.",
        "Know your rights: members pay 45 pounds a year.",
        "The text was written in three scripts.",
    ],
)
def test_the_abstention_detector_leaves_answers_alone(text: str):
    assert not qm.says_it_does_not_know(text)
    assert not qm.abstained(text)
    assert qm.abstained(text, low_confidence=True) and qm.abstained(text, done_reason="abstain")


def test_faithfulness_and_citation_precision():
    src = ["It was built in 1871 by the engineer Miriam Coutts.", "The kettle holds 1.7 litres."]
    assert qm.faithfulness("Miriam Coutts, in 1871", src[:1]) == 1.0
    assert qm.faithfulness("Coutts in 1900", src[:1]) == pytest.approx(2 / 3)
    assert qm.faithfulness("anything", []) is None
    assert qm.citation_precision(src, ["Miriam Coutts"]) == 0.5
    assert qm.citation_precision([], ["x"]) is None


# ---- end to end ---------------------------------------------------------------------------------------


def test_eval_answers_end_to_end_through_the_cli(run_cli, tmp_path: Path, monkeypatch):
    """The tiny set through `shvayambhu eval answers` with the top passage and the shipped BLT checkpoint, in a
    throwaway store: the user's store (seed_home) gains nothing."""
    import rag.api

    ingested: list[list[dict]] = []
    real_ingest = rag.api.Shvayambhu.ingest

    def spy(self, paths, **kw):
        ingested.append([json.loads(x) for p in paths for x in Path(p).read_text(encoding="utf-8").splitlines()])
        return real_ingest(self, paths, **kw)

    monkeypatch.setattr(rag.api.Shvayambhu, "ingest", spy)
    out = tmp_path / "run"
    argv = ("eval", "answers", str(TINY), "--backends", "blt", "--configs", "ours", "--limit", "1", "--out", str(out))
    code, stdout, err = run_cli(*argv)
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["config"] for r in rows} == {"top-passage", "ours-blt"}
    assert "| top-passage |" in stdout and "| ours-blt |" in stdout and "AUROC" in stdout
    assert (out / "risk_coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["questions"] == {"answerable": 1, "adversarial": 1, "out_of_corpus": 1}
    # only the ingested articles went into the store; held-back ones never did
    assert len(ingested) == 1 and {r["prompt"] for r in ingested[0]} == {
        "Harrowgate Lighthouse",
        "Verdant Kettle KX-2",
        "Saffron Barley Soup",
    }
    top = [r for r in rows if r["config"] == "top-passage"]
    assert all(not r.get("error") for r in rows)
    for r in top:  # the top passage of an answerable question is its own paragraph: it holds the gold answer
        if r["kind"] == ANSWERABLE:
            assert r["metrics"]["contains"] == 1.0 and r["metrics"]["abstained"] is False
    ours_ooc = [r for r in rows if r["config"] == "ours-blt" and r["kind"] == OUT_OF_CORPUS]
    assert ours_ooc and all(r["metrics"]["abstained"] for r in ours_ooc)  # the BLT abstains off-corpus
    top_f1 = summary["configs"]["top-passage"]["metrics"]["f1"]
    assert 0 < top_f1["lo"] <= top_f1["mean"] <= top_f1["hi"] < 0.5  # a whole passage is a poor short answer

    code, stdout, err = run_cli("eval", "answers", str(TINY), "--backends", "", "--limit", "1", "--json")
    assert code == 0, err
    assert list(json.loads(stdout)["configs"]) == ["top-passage"]


def test_the_naive_chain_stuffs_the_top_k_and_is_as_confident_as_its_top_score(make_assistant):
    from rag.eval.answers import naive_chain

    a = make_assistant(blt={"max_bytes": 24}, retrieval={"k": 3})
    reply = naive_chain(a, "blt")("How do I boil an egg?")
    hits = a.search("How do I boil an egg?", 3)
    assert [s["id"] for s in reply["sources"]] == [h.id for h in hits]
    assert reply["confidence"] == pytest.approx(hits[0].score)
    assert isinstance(reply["answer"], str) and 0 < len(reply["answer"].encode()) <= 24 * 4


def test_bad_backend_and_missing_fit_calibration_are_one_line_errors(run_cli, monkeypatch):
    code, _, err = run_cli("eval", "answers", str(TINY), "--backends", "mlx,gpt")
    assert code == 1 and "unknown backend 'gpt'" in err and "Traceback" not in err
    code, _, err = run_cli("eval", "answers", str(TINY), "--configs", "ours,best")
    assert code == 1 and "unknown configuration 'best'" in err
    import rag.api

    monkeypatch.delattr(rag.api.Shvayambhu, "fit_calibration", raising=False)
    code, _, err = run_cli("eval", "answers", str(TINY), "--backends", "", "--fit-calibration")
    assert code == 1 and "fit_calibration" in err and len(err.strip().splitlines()) == 1


def test_ollama_runs_only_when_its_server_answers(make_assistant):
    from rag.eval.answers import available, configurations

    assert available(make_assistant(), ["ollama"]) == (["ollama"], [])  # the fake server answers
    usable, notes = available(make_assistant(ollama={"host": "http://127.0.0.1:9"}), ["ollama"])
    assert usable == [] and len(notes) == 1 and notes[0].startswith("ollama skipped:")
    names = [c.name for c in configurations(["mlx", "blt"], ["ours", "noret"])]
    assert names == ["top-passage", "ours-mlx", "noret-mlx", "ours-blt", "noret-blt"]


def test_fit_calibration_gets_our_layers_answers_with_their_correctness(run_cli, monkeypatch, seed_home: Path):
    import rag.api
    from rag.answer import Answer

    calls: list[tuple[Path, list]] = []

    def fit(self, examples):
        calls.append((self.settings.data_dir, list(examples)))
        return {"examples": len(examples)}

    monkeypatch.setattr(rag.api.Shvayambhu, "fit_calibration", fit, raising=False)
    argv = ("eval", "answers", str(TINY), "--backends", "blt", "--configs", "ours", "--limit", "1", "--json")
    code, out, err = run_cli(*argv, "--fit-calibration")
    assert code == 0, err
    assert len(calls) == 1 and calls[0][0] == seed_home  # fitted for the configured store, not the throwaway one
    pairs = calls[0][1]
    assert len(pairs) == 3 and all(isinstance(a, Answer) and isinstance(ok, bool) for a, ok in pairs)
    assert json.loads(out)["calibration"] == {"examples": 3}
    assert sum(ok for _, ok in pairs) <= 1  # one answerable question; an unanswerable one is never answered right


def test_the_benchmark_reports_calibration_cross_validated_over_our_answers():
    """`AUROC, 5-fold CV` comes from weights re-fitted without each question; too few answers give no figure."""
    from types import SimpleNamespace

    from rag.consciousness import metacognition as meta
    from rag.eval.answers import cross_validated_calibration

    before = meta.assess(meta.Evidence(top_pos=1.0, margin_pos=0.5, agreement_pos=0.2, lexical=1.0), 0.45)
    answers = [
        (
            SimpleNamespace(details=meta.update(before, None, None, 0.45, extract=(f, 1.0, 0.0)), done_reason="x"),
            {"correct": f > 0.5},
        )
        for f in [i / 20 for i in range(20)]
    ]
    got = cross_validated_calibration(answers, resamples=50)
    assert got["auroc_cv"]["mean"] > 0.9 and 0.0 <= got["wrong_confident_cv"]["mean"] <= 1.0
    assert cross_validated_calibration(answers[:8], resamples=50) == {}
