"""Loading BEIR folders and our held-out split: the fixture, and every way a dataset can be wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rag.eval.beir import BeirError, Doc, heldout_dataset, load_beir, split_heldout

TINY = Path(__file__).parent / "fixtures" / "beir_tiny"


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(TINY, dst)
    return dst


def _qrels(folder: Path, text: str, split: str = "test") -> None:
    (folder / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")


def test_loads_the_fixture():
    ds = load_beir(TINY)
    assert len(ds.corpus) == 12 and ds.split == "test"
    assert sorted(ds.queries) == ["q1", "q2", "q3", "q4", "q5", "q6"]  # q7 has no judgement: not evaluated
    assert ds.qrels["q1"] == {"d1": 2, "d2": 1, "d3": 0}
    assert ds.corpus["d11"].embed_text() == ds.corpus["d11"].text  # empty title: no leading space
    assert ds.corpus["d1"].embed_text() == "Photosynthesis " + ds.corpus["d1"].text
    assert not ds.warnings
    assert sorted(load_beir(TINY, "dev").queries) == ["q1", "q3"]


def test_embed_fields():
    d = Doc("T", "body")
    assert (d.embed_text("title_text"), d.embed_text("title"), d.embed_text("text")) == (
        "T body",
        "T",
        "body",
    )
    assert d.embed_text("both") == "T body" and d.embed_text("prompt") == "T" and d.embed_text("response") == "body"
    with pytest.raises(BeirError, match="unknown embed field"):
        d.embed_text("nope")


def test_missing_qrels_names_the_splits_there_are():
    with pytest.raises(BeirError, match=r"qrels/train\.tsv.*split 'train'.*dev, test"):
        load_beir(TINY, "train")


def test_missing_files(tmp_path: Path):
    with pytest.raises(BeirError, match="no such folder"):
        load_beir(tmp_path / "absent")
    ds = _copy(tmp_path)
    (ds / "queries.jsonl").unlink()
    with pytest.raises(BeirError, match="queries.jsonl: missing queries file"):
        load_beir(ds)
    shutil.rmtree(ds / "qrels")
    with pytest.raises(BeirError, match="no qrels"):
        load_beir(ds)


def test_non_integer_score_names_file_and_line(tmp_path: Path):
    ds = _copy(tmp_path)
    _qrels(ds, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t0.5\n")
    with pytest.raises(BeirError, match=r"test\.tsv:3: relevance score '0\.5' is not an integer"):
        load_beir(ds)
    _qrels(ds, "query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(BeirError, match=r"test\.tsv:2: relevance score 'high'"):
        load_beir(ds)
    _qrels(ds, "q1\td1\t1.0\n")  # no header, an integral float: accepted
    assert load_beir(ds).qrels == {"q1": {"d1": 1}}


def test_wrong_column_count(tmp_path: Path):
    ds = _copy(tmp_path)
    _qrels(ds, "query-id\tcorpus-id\tscore\nq1\t0\td1\t1\n")
    with pytest.raises(BeirError, match=r"test\.tsv:2: want 3 tab-separated columns.*got 4"):
        load_beir(ds)


def test_unknown_ids_are_warnings_with_lines_or_errors_when_strict(tmp_path: Path):
    ds = _copy(tmp_path)
    _qrels(ds, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tghost\t1\nq99\td1\t1\n")
    loaded = load_beir(ds)
    text = "\n".join(loaded.warnings)
    assert "test.tsv:3: corpus-id 'ghost' is not in corpus.jsonl" in text
    assert "test.tsv:4: query-id 'q99' is not in queries.jsonl" in text
    assert loaded.qrels == {"q1": {"d1": 1, "ghost": 1}}  # the ghost still counts against recall, as in MTEB
    assert loaded.info["unknown_corpus_ids"] == 1 and loaded.info["unknown_query_ids"] == 1
    with pytest.raises(BeirError, match="ghost"):
        load_beir(ds, strict=True)
    _qrels(ds, "query-id\tcorpus-id\tscore\nq99\td1\t1\n")
    with pytest.raises(BeirError, match="none of the judged query ids"):
        load_beir(ds)


def test_bad_json_lines_name_file_and_line(tmp_path: Path):
    ds = _copy(tmp_path)
    lines = (ds / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    (ds / "corpus.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(BeirError, match=r"corpus\.jsonl:2: invalid JSON"):
        load_beir(ds)
    (ds / "corpus.jsonl").write_text(json.dumps({"title": "x", "text": "y"}) + "\n", encoding="utf-8")
    with pytest.raises(BeirError, match=r"corpus\.jsonl:1: missing or empty '_id'"):
        load_beir(ds)
    (ds / "corpus.jsonl").write_text(json.dumps({"_id": 5, "text": ["y"]}) + "\n", encoding="utf-8")
    with pytest.raises(BeirError, match=r"corpus\.jsonl:1: field 'text' must be a string"):
        load_beir(ds)


def test_duplicates_warn_and_last_wins(tmp_path: Path):
    ds = _copy(tmp_path)
    _qrels(ds, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n")
    loaded = load_beir(ds)
    assert loaded.qrels["q1"]["d1"] == 2 and any("duplicate judgement" in w for w in loaded.warnings)


def _record(prompt: str, response: str, split: str | None = None) -> str:
    return json.dumps({"prompt": prompt, "response": response, **({"split": split} if split else {})})


def test_heldout_by_split_field(tmp_path: Path):
    f = tmp_path / "c.jsonl"
    rows = [_record(f"question {i}?", f"answer number {i}.", "heldout" if i % 3 == 0 else None) for i in range(9)]
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = heldout_dataset([f])
    assert len(ds.corpus) == 9 and len(ds.queries) == 3
    for q, rels in ds.qrels.items():  # each held-out prompt's one relevant document is its own record
        (doc,) = rels
        assert ds.corpus[doc].title == ds.queries[q]
    assert "split is 'heldout'" in ds.info["rule"]


def test_heldout_by_hash_when_no_split_field():
    class R:
        def __init__(self, i: int):
            self.id, self.split = f"id{i}", None

    records = [R(i) for i in range(40)]
    records[0].split = "train"  # a split field that is not the held-out one changes nothing
    rest, held, rule = split_heldout(records, fraction=0.1)
    assert len(held) == 4 and len(rest) == 36 and "hash" in rule
    assert [r.id for r in split_heldout(records, fraction=0.1)[1]] == [r.id for r in held]  # deterministic
