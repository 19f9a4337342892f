"""Write two BEIR-format sets under `bench/data/`. `rare_terms`: the query's rare token decides the answer (error
codes, part numbers and personal names over documents that otherwise say much the same thing). `code_symptom`:
each error code is documented for three products with three different causes, and a query gives the code plus
the symptom in other words, so the code (lexical) and the meaning (dense) are each needed. Deterministic
(seeded); run from the repo root to regenerate: `python bench/make_rare_terms.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

PRODUCTS = ["LaserJet Pro", "OfficeJet", "Brother HL", "Canon Pixma", "Epson EcoTank", "Kyocera Ecosys"]
CAUSES = [
    ("the paper feed sensor in tray 2 is blocked", "open tray 2, remove torn paper and clean the sensor window"),
    ("the fuser has not reached its working temperature", "switch the printer off for ten minutes, then on again"),
    ("the toner cartridge chip cannot be read", "reseat the cartridge and wipe its gold contacts"),
    ("the duplex unit is not seated", "push the rear duplex unit in until it clicks"),
    ("the print head is overheating", "pause printing for a few minutes and lower the print density"),
    ("the network module lost its IP address", "renew the DHCP lease or set a fixed address"),
    ("the waste ink pad is full", "have the ink pad replaced by a service centre"),
    ("the firmware update was interrupted", "run the recovery update from the USB port"),
]
ROLES = ["a hydrologist", "a glass artist", "a chess coach", "a beekeeper", "an archivist", "a violin maker"]
PLACES = ["in Tartu", "in Porto", "in Tromsø", "in Kraków", "in Ljubljana", "in Valletta"]
FIRST = ["Ilse", "Tariq", "Oona", "Bartek", "Mireille", "Kwabena", "Solveig", "Dario", "Yuki", "Aurelio"]
LAST = ["Vandersloot", "Okonkwo", "Haraldsen", "Quintela", "Zubrzycki", "Ferencz", "Lindqvist", "Abernathy"]
PARTS = ["drive belt", "pressure valve", "filter cartridge", "door gasket", "heating element", "drain pump"]
MACHINES = ["washing machine", "dishwasher", "coffee machine", "tumble dryer"]
SYMPTOMS = [  # each cause of CAUSES told the way a user would, in other words
    "pages get stuck coming out of the second drawer",
    "it stays cold and will not warm up",
    "it says the ink or toner is not recognised",
    "the unit that prints on both sides feels loose",
    "the printing stops because it gets too hot",
    "it dropped off the wifi and has no address",
    "it says the sponge that soaks up ink is saturated",
    "it died halfway through installing new software",
]


def build(seed: int = 7) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    """Documents, queries and (query id, doc id) judgements."""
    rng = random.Random(seed)
    docs: list[dict] = []
    queries: list[dict] = []
    qrels: list[tuple[str, str]] = []
    codes = rng.sample(range(1000, 9999), 96)
    for n, code in enumerate(codes):
        product, (cause, fix) = PRODUCTS[n % len(PRODUCTS)], CAUSES[rng.randrange(len(CAUSES))]
        tag = f"E{code}"
        docs.append({"_id": f"err{n}", "title": f"{product} error {tag}", "text": f"Error {tag} means {cause}; {fix}."})
        if n % 2 == 0:
            queries.append({"_id": f"q-err{n}", "text": f"my {product} printer shows {tag}, what do I do?"})
            qrels.append((f"q-err{n}", f"err{n}"))
    names = [(f, s) for f in FIRST for s in LAST]
    rng.shuffle(names)
    for n, (first, last) in enumerate(names[:60]):
        role, place = ROLES[rng.randrange(len(ROLES))], PLACES[rng.randrange(len(PLACES))]
        docs.append(
            {"_id": f"who{n}", "title": f"{first} {last}", "text": f"{first} {last} is {role} {place}, known locally."}
        )
        if n % 2 == 0:
            queries.append({"_id": f"q-who{n}", "text": f"who is {last}, {first}?"})
            qrels.append((f"q-who{n}", f"who{n}"))
    for n in range(60):
        machine, part = MACHINES[n % len(MACHINES)], PARTS[rng.randrange(len(PARTS))]
        number = f"{rng.choice('ABCDFGHK')}{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"
        docs.append(
            {
                "_id": f"part{n}",
                "title": f"Part {number}",
                "text": f"Part number {number} is the {part} for the {machine}; replace it every few years.",
            }
        )
        if n % 2 == 0:
            queries.append({"_id": f"q-part{n}", "text": f"what is part {number} for?"})
            qrels.append((f"q-part{n}", f"part{n}"))
    return docs, queries, qrels


def build_code_symptom(seed: int = 11) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    """40 codes x 3 products, each with its own cause; one query per code, naming the code and one symptom."""
    rng = random.Random(seed)
    docs: list[dict] = []
    queries: list[dict] = []
    qrels: list[tuple[str, str]] = []
    for n, code in enumerate(rng.sample(range(1000, 9999), 40)):
        causes = rng.sample(range(len(CAUSES)), 3)
        products = rng.sample(PRODUCTS, 3)
        for j, (c, product) in enumerate(zip(causes, products, strict=True)):
            cause, fix = CAUSES[c]
            docs.append(
                {
                    "_id": f"cs{n}-{j}",
                    "title": f"{product} error E{code}",
                    "text": f"Error E{code} on the {product} means {cause}; {fix}.",
                }
            )
        pick = rng.randrange(3)
        queries.append({"_id": f"q-cs{n}", "text": f"E{code}: {SYMPTOMS[causes[pick]]}"})
        qrels.append((f"q-cs{n}", f"cs{n}-{pick}"))
    return docs, queries, qrels


def write(out: Path, docs: list[dict], queries: list[dict], qrels: list[tuple[str, str]]) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in queries)
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t1\n" for q, d in qrels)
    print(f"{len(docs)} documents, {len(queries)} queries -> {out}")


def main() -> None:
    write(DATA / "rare_terms", *build())
    write(DATA / "code_symptom", *build_code_symptom())


if __name__ == "__main__":
    main()
