"""Passages: heading paths, sentence bounds, spans, overlap; re-ingest, edits and prune per file; sources name them."""

from __future__ import annotations

import re
from pathlib import Path

from index.retrieve import search
from ingest.passages import split_passages
from ingest.pipeline import collect, flatten_meta, ingest_paths
from rag.answer import Source, place

BIKE_LOG = """# Bike log

## Tyres

Front tyre pressure is 4.5 bar and the rear is 5 bar. Check both every Sunday before the long ride.

## Chain

The chain was waxed on 3 March. It is due for a new wax every 300 km, or after any wet ride.

## Brakes

The rear brake pads were replaced in January. The front pads still have about 2 mm left.
"""


def sentences(n: int, words: int = 14) -> str:
    """n distinct sentences of about 90 bytes each."""
    return " ".join(f"Sentence {i} says " + " ".join(f"w{i}x{j}" for j in range(words)) + "." for i in range(n))


def test_heading_paths_spans_and_no_passage_across_a_heading() -> None:
    text = BIKE_LOG + "\n```sh\n# not a heading\nls\n```\n"
    ps = split_passages(text)
    assert [p.heading for p in ps] == ["Bike log > Tyres", "Bike log > Chain", "Bike log > Brakes"]
    assert all(text[p.start : p.end] == p.text for p in ps)
    assert ps[0].text.startswith("Front tyre") and "chain" not in ps[0].text.lower()
    assert ps[0].line == text[: ps[0].start].count("\n") + 1 == 5
    assert "# not a heading" in ps[-1].text  # a comment in a code fence is no heading


def test_sentences_whole_under_limit_with_overlap() -> None:
    text = "# Long\n\n" + sentences(40)
    ps = split_passages(text, limit=1000, overlap=200)
    assert len(ps) >= 4 and all(len(p.text.encode()) <= 1000 for p in ps)
    assert all(p.text.startswith("Sentence ") and p.text.endswith(".") for p in ps)  # cut only between sentences
    for a, b in zip(ps, ps[1:], strict=False):
        assert a.start < b.start < a.end <= b.end  # the next one starts inside the one before: the overlap
        assert len(text[b.start : a.end].encode()) <= 200
    covered = set().union(*(range(p.start, p.end) for p in ps))
    body = text.index("Sentence 0")
    assert all(i in covered for i in range(body, len(text)) if not text[i].isspace())  # nothing lost


def test_only_a_sentence_over_the_limit_is_cut_inside() -> None:
    long = "word " * 500  # 2,500 bytes, no sentence end
    ps = split_passages(f"Short one. {long}\n\nAfter it.", markdown=False, limit=1000)
    assert all(len(p.text.encode()) <= 1000 for p in ps) and len(ps) >= 3
    assert ps[0].text.startswith("Short one.") and ps[-1].text.endswith("After it.")
    assert all(not re.search(r"wor$|^ord", p.text) for p in ps)  # cut at spaces, never inside a word


def test_plain_text_has_no_headings() -> None:
    ps = split_passages("# not a heading in a .txt\n\nA line.\n", markdown=False)
    assert len(ps) == 1 and ps[0].heading == "" and ps[0].text.startswith("# not a heading")


def test_passage_metadata_and_source_place(tmp_path: Path) -> None:
    path = tmp_path / "bike_log.md"
    path.write_text(BIKE_LOG, encoding="utf-8")
    records, rejections = collect([path])
    assert not rejections and len(records) == 3
    meta = flatten_meta(records[0], "prompt")
    assert meta["heading"] == "Bike log > Tyres" and meta["source"] == str(path.resolve())
    assert BIKE_LOG[meta["start"] : meta["end"]] == records[0].response and "page" not in meta
    assert not any(k.startswith("meta.") for k in meta)  # the place is top-level metadata, not meta.*
    assert records[0].prompt == "bike log: Bike log > Tyres" and records[0].kind == "text"
    src = Source(id="x", score=0.5, prompt="p", **Source.place_fields(meta))
    assert src.where == "bike_log.md: Bike log > Tyres"
    d = src.to_dict()
    assert (d["file"], d["heading"], d["page"], d["start"]) == (
        str(path.resolve()),
        "Bike log > Tyres",
        None,
        meta["start"],
    )
    assert place("/x/ferry.pdf", None, 2) == "ferry.pdf, page 2"


def test_the_answering_passage_not_the_file(tmp_path: Path, make_collection, embedder) -> None:
    path = tmp_path / "bike_log.md"
    path.write_text(BIKE_LOG, encoding="utf-8")
    col = make_collection()
    ingest_paths([path], col, embedder, progress=False)
    hits = search(col, embedder, "What tyre pressure should I use?", k=3, mode="dense")
    assert hits[0].metadata["heading"] == "Bike log > Tyres"
    assert "4.5 bar" in hits[0].response and "wax" not in hits[0].response


def test_reingest_free_edit_replaces_prune_per_file(tmp_path: Path, make_collection, embedder) -> None:
    log, other = tmp_path / "bike_log.md", tmp_path / "other.md"
    log.write_text(BIKE_LOG, encoding="utf-8")
    other.write_text("# Other\n\nThe other file stays as it is, whatever happens to the bike log.\n", encoding="utf-8")
    col = make_collection()
    s1 = ingest_paths([tmp_path], col, embedder, progress=False)
    assert (s1.added, col.count()) == (4, 4)
    s2 = ingest_paths([tmp_path], col, embedder, progress=False)
    assert (s2.added, s2.updated, s2.unchanged, col.count()) == (0, 0, 4, 4)

    # An edit: a new paragraph on top moves every span, one passage's text changes, one section goes.
    edited = "Kept in the garage.\n\n" + BIKE_LOG.replace("4.5 bar", "4.2 bar").split("## Brakes")[0]
    log.write_text(edited, encoding="utf-8")
    s3 = ingest_paths([log], col, embedder, progress=False)
    assert (s3.added + s3.updated, s3.unchanged) == (2, 1)
    metas = col.get(where={"source": str(log.resolve())}, include=["metadatas"])["metadatas"]
    texts = {edited[m["start"] : m["end"]] for m in metas}  # spans point at the edited file's text
    assert texts == {m["response"] for m in metas} and not any("4.5 bar" in t for t in texts)
    assert len(metas) == 3 and not any("brake" in t for t in texts)  # the old passages of the file are gone
    assert len(col.get(where={"source": str(other.resolve())})["ids"]) == 1 and col.count() == 4

    log.unlink()  # prune acts on the files named: the other file is untouched
    s4 = ingest_paths([other], col, embedder, prune=True, progress=False)
    assert (s4.removed, s4.unchanged) == (0, 1) and col.count() == 4


def test_evidence_objects_name_the_place() -> None:
    from rag.answer import Answer
    from rag.serve.generation import report

    meta = {"source": "/notes/bike_log.md", "heading": "Bike log > Tyres", "start": 12, "end": 99}
    src = Source(id="a", score=0.7, prompt="bike log: Bike log > Tyres", **Source.place_fields(meta))
    answer = Answer("4.5 bar.", [src], 0.8, False, "mlx", "m", {"total": 1.0})
    got = report(answer, [])["sources"][0]  # the object the OpenAI and Ollama APIs and the page carry
    assert (got["file"], got["heading"], got["page"], got["start"], got["end"]) == (
        "/notes/bike_log.md",
        "Bike log > Tyres",
        None,
        12,
        99,
    )
    assert answer.to_dict()["sources"][0]["heading"] == "Bike log > Tyres"


def test_chunks_of_an_older_version_give_way_to_passages(tmp_path: Path, make_collection, embedder) -> None:
    path = tmp_path / "bike_log.md"
    path.write_text(BIKE_LOG, encoding="utf-8")
    col = make_collection()
    old = {"source": str(path.resolve()), "kind": "text", "key": "k", "prompt": "bike log: Tyres", "response": "x"}
    col.upsert(ids=["old-chunk"], embeddings=[[0.1] * embedder.dim], documents=["x"], metadatas=[old])
    summary = ingest_paths([path], col, embedder, progress=False)
    assert summary.added == 3 and col.count() == 3 and not col.get(ids=["old-chunk"])["ids"]
