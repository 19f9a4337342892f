"""Fit the metacognition's default weights and compare the calibrated confidence with the old raw-cosine one.

Data (all written for this project; no public QA file): four stores, each built at fp32 and at int8 in a fresh
data directory: the seed corpus (paraphrased seed questions on-topic; OFF_CORPUS and bench/data/off_corpus.jsonl
off-topic), a folder of ten household notes (bench/data/notes, questions in bench/data/notes_questions.jsonl),
and the rare_terms and code_symptom document sets (their queries on-topic, the other set's queries and the
general-knowledge questions off-topic).

1. Retrieval stage: each question goes through `Shvayambhu.prepare` (real retrieval, the store's own reference);
   label = the store holds the answer. A logistic over the relative features is fitted on all stores pooled,
   and leave-one-corpus-out (fit on three corpora, score the fourth) shows whether it transfers.
2. Answer stage: the BLT (abstention off, so that every question is answered) answers the questions of the
   stores with a gold document (notes, rare_terms, code_symptom; int8); an answer is right when the gold
   document holds it (`calibration.support` >= 0.6). The final logistic is fitted on these.

    python bench/calibrate_confidence.py [--quick] [--no-answers]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rag.api import Shvayambhu  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.consciousness import calibration as cal  # noqa: E402
from rag.consciousness import metacognition as meta  # noqa: E402

DATA = REPO / "bench" / "data"
# The old weights (fitted once on the seed corpus's raw fp32 cosines), kept here for the comparison only.
OLD = (-6.2, 9.0, 2.9, 4.5)

ON_SEED = (
    "Why does the sky look blue?",
    "What makes sunsets red?",
    "How do black holes form and what are they?",
    "How long is a light year?",
    "How does carbon dating work?",
    "How do I get to sleep more quickly?",
    "What's the right length for a power nap?",
    "How big should my emergency savings be?",
    "Is the Pomodoro method effective?",
    "How should a beginner start working out?",
    "How can I spot a phishing email?",
    "What does an API do, in simple words?",
    "What is overfitting?",
    "What's the trolley problem about?",
    "What are the problems with utilitarianism?",
    "Is it OK to use AI to write my essays?",
    "affect vs effect: which one is which?",
    "Should I use a serial comma?",
    "How does memory work in the brain?",
    "Why do people forget things?",
    "Does sleeping help memory?",
    "Explain the Monty Hall problem.",
    "What is confirmation bias?",
    "What's the answer to the bat and ball puzzle?",
    "How do I deal with grief?",
    "How can I support a depressed friend?",
    "Empathy versus sympathy: what's the difference?",
    "How do I calm down when angry?",
    "Are you able to browse the web?",
    "Do you have emotions?",
    "What is retrieval augmented generation?",
    "How does the internet work?",
    "Why does having many tabs open slow my computer?",
    "How does photosynthesis work?",
    "Why do volcanoes erupt?",
    "How do I overcome writer's block?",
    "What is a villanelle poem?",
)
OFF_SEED = (
    "What is the torque spec for the cylinder head bolts on a 2004 Honda Civic?",
    "Who won the 1986 FIFA World Cup final and what was the score?",
    "What's the current exchange rate of the Thai baht to the euro?",
    "How many calories are in a McDonald's Big Mac?",
    "What is the population of Ulaanbaatar?",
    "How do I configure BGP route reflectors on a Juniper router?",
    "Give me the lyrics to Bohemian Rhapsody.",
    "What is the melting point of tungsten carbide?",
    "Which cricket team won the 2011 World Cup?",
    "How do I file a VAT return in Portugal?",
    "What is the chemical formula of ibuprofen?",
    "What time does the Louvre close on Fridays?",
    "How do I remove a stripped screw from a bicycle disc brake rotor?",
    "What were the main causes of the War of the Spanish Succession?",
    "Translate 'the cat sleeps on the mat' into Swahili.",
    "What's the best bait for catching catfish in the Mississippi river?",
    "How do I compile the Linux kernel with a custom config?",
    "Who was the third Mughal emperor?",
    "What is the dosage of amoxicillin for a 20 kg child?",
    "How tall is Mount Kilimanjaro?",
    "What is the recipe for authentic Hungarian goulash?",
    "What's the plot of the opera Tosca?",
    "Which stocks are in the Nikkei 225?",
    "How do I replace the water pump on a Volvo XC90?",
    "What is the capital of Burkina Faso?",
    "Explain bidding conventions in contract bridge.",
    "What's the zoning law for accessory dwelling units in Austin, Texas?",
    "How do I knit a cable stitch?",
)


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def beir(name: str, tmp: Path) -> tuple[Path, list[tuple[str, str | None]], dict[str, str]]:
    """A BEIR-style set as our JSONL (titled passages), its queries with their gold document, and the texts."""
    corpus = jsonl(DATA / name / "corpus.jsonl")
    out = tmp / f"{name}.jsonl"
    rows = [{"kind": "text", "prompt": d.get("title") or d["_id"], "response": d["text"]} for d in corpus]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    gold = {}
    for line in (DATA / name / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        q, d, score = line.split("\t")
        if int(score) > 0:
            gold.setdefault(q, d)
    texts = {d["_id"]: f"{d.get('title', '')}\n{d['text']}" for d in corpus}
    queries = [(q["text"], texts.get(gold.get(q["_id"], ""))) for q in jsonl(DATA / name / "queries.jsonl")]
    return out, [(q, t) for q, t in queries if t], texts


def datasets(tmp: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """name -> paths to ingest, on-topic (question, gold text or None), off-topic questions."""
    general = [r["prompt"] for r in jsonl(DATA / "off_corpus.jsonl")]
    notes = jsonl(DATA / "notes_questions.jsonl")
    note_text = {p.stem: p.read_text(encoding="utf-8") for p in (DATA / "notes").iterdir()}
    rare, rare_q, _ = beir("rare_terms", tmp)
    code, code_q, _ = beir("code_symptom", tmp)
    n = 12 if quick else 40
    sets = {
        "seed": {"paths": [REPO / "ingest" / "data" / "seed.jsonl"], "on": [(q, None) for q in ON_SEED]},
        "notes": {"paths": [DATA / "notes"], "on": [(r["question"], note_text[r["note"]]) for r in notes if r["note"]]},
        "rare_terms": {"paths": [rare], "on": rare_q[::2][:n]},
        "code_symptom": {"paths": [code], "on": code_q[:n]},
    }
    sets["seed"]["off"] = list(OFF_SEED) + general
    sets["notes"]["off"] = [r["question"] for r in notes if not r["note"]] + general[:20]
    sets["rare_terms"]["off"] = general[:20]
    sets["code_symptom"]["off"] = general[:20]
    # near misses: the other printer set's questions, about error codes this store does not hold
    sets["rare_terms"]["near"] = [q for q, _ in code_q[:20]]
    sets["code_symptom"]["near"] = [q for q, _ in rare_q[:20]]
    if quick:
        for s in sets.values():
            s["on"], s["off"], s["near"] = s["on"][:12], s["off"][:12], s.get("near", [])[:6]
    return sets


def old_confidence(ev: meta.Evidence) -> float:
    z = OLD[0] + OLD[1] * ev.top + OLD[2] * ev.margin + OLD[3] * ev.agreement
    return 1 / (1 + math.exp(-z))


def assistant(data_dir: Path, precision: str, **sections: Any) -> Shvayambhu:
    overrides = {"store": {"data_dir": str(data_dir)}, "embedding": {"precision": precision}, **sections}
    return Shvayambhu(load_settings(overrides=overrides, environ={}))


def retrieval_rows(sets: dict[str, Any], tmp: Path, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    """Features of every question against every store, at each precision."""
    rows = []
    for name, s in sets.items():
        for precision in precisions:
            a = assistant(tmp / f"{name}-{precision}", precision)
            a.ingest(s["paths"], progress=False)
            ref, _ = a.calibration()
            print(f"{name} {precision}: {a.corpus().count()} records, reference {json.dumps(ref.to_dict())}")
            be = a.backend("blt")
            kinds = (("on", [q for q, _ in s["on"]]), ("off", s["off"]), ("near", s.get("near", [])))
            for kind, questions in kinds:
                for q in questions:
                    c = a.prepare(q, use_memory=False, backend=be).confidence
                    old = old_confidence(c.evidence)
                    rows.append(
                        {"store": name, "precision": precision, "on": kind == "on", "kind": kind, "conf": c, "old": old}
                    )
    return rows


def report_retrieval(rows: list[dict[str, Any]], weights: list[float]) -> dict[str, Any]:
    x = np.array([[r["conf"].features[f] for f in cal.RETRIEVAL_FEATURES] for r in rows])
    y = np.array([r["on"] for r in rows], dtype=float)
    new = [cal.sigmoid(cal.logit(weights, v)) for v in x]
    out: dict[str, Any] = {
        "pooled": {"n": len(rows), "old": cal.auroc([r["old"] for r in rows], y), "new": cal.auroc(new, y)}
    }
    for key in sorted({(r["store"], r["precision"]) for r in rows}):
        idx = [i for i, r in enumerate(rows) if (r["store"], r["precision"]) == key]
        on = [new[i] for i in idx if y[i]]
        off = [new[i] for i in idx if not y[i]]
        plain = [i for i in idx if rows[i]["kind"] != "near"]
        out["/".join(key)] = {
            "n": len(idx),
            "old": round(cal.auroc([rows[i]["old"] for i in idx], y[idx]), 3),
            "new": round(cal.auroc([new[i] for i in idx], y[idx]), 3),
            "old_without_near_misses": round(cal.auroc([rows[i]["old"] for i in plain], y[plain]), 3),
            "new_without_near_misses": round(cal.auroc([new[i] for i in plain], y[plain]), 3),
            "on_low": round(float(np.mean([v < 0.45 for v in on])), 3),
            "off_low": round(float(np.mean([v < 0.45 for v in off])), 3),
            "old_on_low": round(float(np.mean([rows[i]["old"] < 0.45 for i in idx if y[i]])), 3),
            "old_off_low": round(float(np.mean([rows[i]["old"] < 0.45 for i in idx if not y[i]])), 3),
        }
    held = {}  # leave one corpus out: fit on the others, score this one
    for store in sorted({r["store"] for r in rows}):
        train = [i for i, r in enumerate(rows) if r["store"] != store]
        test = [i for i, r in enumerate(rows) if r["store"] == store]
        w = cal.fit_logistic(x[train], y[train])
        held[store] = round(cal.auroc([cal.sigmoid(cal.logit(w, x[i])) for i in test], y[test]), 3)
    out["leave_one_corpus_out_new"] = held
    return out


def answer_rows(sets: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    """BLT answers (abstention off) at int8 on the stores with gold documents; right = the gold text holds it."""
    rows = []
    for name in ("notes", "rare_terms", "code_symptom"):
        s = sets[name]
        a = assistant(tmp / f"{name}-int8", "int8", blt={"abstain": False})
        for q, gold in [*s["on"], *[(q, None) for q in s["off"] + s.get("near", [])]]:
            ans = a.ask(q, backend="blt", use_memory=False)
            right = gold is not None and cal.support(ans.answer, gold) >= cal.SUPPORTED
            r_old = old_confidence(ans.details.evidence)
            g = ans.details.generator
            old_final = r_old if g is None else 0.7 * r_old + 0.3 * g
            rows.append({"store": name, "right": right, "answer": ans, "old": old_final})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a dozen questions per store and class")
    p.add_argument("--no-answers", action="store_true", help="skip the answer stage (no BLT generation)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sets = datasets(tmp, args.quick)
        rows = retrieval_rows(sets, tmp, ("fp32", "int8"))
        x = np.array([[r["conf"].features[f] for f in cal.RETRIEVAL_FEATURES] for r in rows])
        y = np.array([r["on"] for r in rows], dtype=float)
        fitted = cal.fit_logistic(x, y)
        result: dict[str, Any] = {
            "retrieval_weights": [round(v, 2) for v in fitted],
            "retrieval_shipped": report_retrieval(rows, cal.DEFAULT_WEIGHTS.retrieval),
            "retrieval_fitted": report_retrieval(rows, fitted),
        }
        print(json.dumps(result, indent=2), flush=True)  # the retrieval stage, before the (slow) answer stage
        if not args.no_answers:
            cal.DEFAULT_WEIGHTS.retrieval[:] = fitted  # the answer stage reads the fitted retrieval logit
            answers = answer_rows(sets, tmp)
            confs = [r["answer"].details for r in answers]
            right = [r["right"] for r in answers]
            weights, summary = meta.fit(confs, right, [False] * len(confs), cal.DEFAULT_WEIGHTS)
            result["answer_weights"] = [round(v, 2) for v in weights.answer]
            result["answers"] = {
                **summary,
                "old_final": cal.auroc([r["old"] for r in answers], right),
                "retrieval_only": cal.auroc([c.retrieval for c in confs], right),
            }
            print(json.dumps({k: result[k] for k in ("answer_weights", "answers")}, indent=2))


if __name__ == "__main__":
    main()
