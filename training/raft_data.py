"""Retrieval-aware fine-tuning data (RAFT, Zhang et al., 2024) for the MLX chat model, in the layer's own prompt.

From a corpus: the held-out records (the one held-out rule, any letter case) are dropped, and so is any question
that repeats one of theirs. Every other record gives its own question (prompt -> a brief answer from its
response) and questions written from its passage by templates (`passage_questions`: the answer is a sentence of
the passage, checked). A share of the records (`abstain_share`, by a stable hash) is *withheld* from the store
the examples are retrieved from: their questions meet distractors and the target is the layer's own "not
found" sentence, or another record's answer where one in the prompt holds it (the held-out case). The prompt of
an example is whatever the answering layer builds for the question against that store (`Layer`, given by the
caller: `rag` builds it; training imports nothing of the assistant).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ingest.records import HELDOUT_FRACTION, heldout_flags
from training.data import CorpusRecord, TrainingError
from training.span_questions import span_questions
from training.text import BRIEF_WORDS, brief, norm, sentences

# question -> (chat messages as the model reads them, {record id: the text of it the prompt shows}); the
# mapping is empty (or the whole answer None) when the layer puts no reference in the prompt (then it answers
# without the documents).
Layer = Callable[[str], "tuple[list[dict[str, str]], dict[str, str]] | None"]

_PRONOUN = set("it this that these those they he she there you we i what which what's everyone someone one".split())
_COPULA = re.compile(r"^(?:(the|a|an) )?([a-z][\w'-]*(?: [\w'-]+){0,3}?) (is|are|was|were) (?!not\b)(.{12,})$", re.I)
_TO = re.compile(r"^To ([^,]{6,70}), (.{12,})$")
_IF = re.compile(r"^If ([^,]{6,70}), (.{12,})$")
_BECAUSE = re.compile(r"^(.{12,90}?),? because (.{8,})$")
SAME_ANSWER = 0.8  # MiniLM cosine at which a shown passage says what the withheld one says (in other words)
SAME_SENTENCE = 0.9  # the same for one sentence (two sentences about two people of one trade reach 0.8)
SAME_QUESTION = 0.8  # a shown chat record whose question is this close asks the same ("a haiku about autumn rain")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")

# (text, candidates) -> the cosine similarity of text to each candidate, in order (one embedding pass)
Similar = Callable[[str, list[str]], "list[float]"]


@dataclass
class Item:
    """One training question before the layer sees it: answer it (`answer` is the brief target, or None for a
    corpus pair, whose target is the brief start of what the prompt shows) or abstain (`role` = "abstain")."""

    question: str
    answer: str | None
    record: str  # the id of the record whose passage answers it
    kind: str  # "pair" (the record's own prompt), "generated" (a sentence template) or "span" (a short span)
    role: str  # "answer" or "abstain" (withheld from the store)
    split: str  # "train" or "val"
    evidence: str | None = None  # the sentence of the passage that holds the answer (span questions)


@dataclass
class Plan:
    """The records the fine-tuning store holds and the questions asked against it."""

    store: list[CorpusRecord]
    items: list[Item]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Example:
    """A training example: the layer's messages, the assistant's target, and where it came from."""

    question: str
    messages: list[dict[str, str]]
    target: str
    role: str  # "answer", "abstain", "twin" (answered from another record: the held-out case) or "anchor"
    kind: str
    record: str
    split: str


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text


def passage_questions(passage: str, limit: int = 4) -> list[tuple[str, str]]:
    """(question, answer sentence) pairs written from the sentences of `passage` by templates; every answer is
    a sentence found verbatim in the passage. Deterministic: no model is asked (a 135M model writes ~5 tokens/s
    here)."""
    out: list[tuple[str, str]] = []
    for s in sentences(passage):
        body = s.rstrip(".!?")
        q = None
        if m := _TO.match(body):
            q = f"How do you {m.group(1)}?"
        elif m := _IF.match(body):
            q = f"What should you do if {m.group(1)}?"
        elif m := _BECAUSE.match(body):
            q = f"Why is it that {_lower_first(m.group(1))}?"
        elif (m := _COPULA.match(body)) and m.group(2).split()[0].lower() not in _PRONOUN:
            article = f"{m.group(1).lower()} " if m.group(1) else ""
            subject = m.group(2) if article else _lower_first(m.group(2))  # after an article it is as written
            q = f"What {m.group(3).lower()} {article}{subject}?"
        if q and s in passage and norm(q) != norm(s):
            out.append((q, s))
        if len(out) >= limit:
            break
    return out


def found_elsewhere(
    item: Item,
    shown: Sequence[str],
    passage: str | None,
    similar: Similar | None,
    asked: Sequence[str | None] = (),
    words: int = BRIEF_WORDS,
) -> str | None:
    """The answer a withheld record's question still finds in its prompt (then "not found" would be a wrong
    target, and the question is taught to answer from that other record instead), or None: the span or answer
    sentence as written, every number of the span, or, with `similar`, a shown passage saying what the record's
    passage says or a shown record whose question (`asked`, one per shown text, None for a document) asks the
    same in other words (a twin, whose answer may be worded apart, as two haiku are; for a pair: the opening of
    either, at most `words`), or a shown sentence saying what its answer sentence says. A span is there or not
    as written, so a near miss (another person in the same kind of sentence) stays an abstain example."""
    text = norm(" ".join(shown))
    gold = norm(item.evidence or item.answer or "")  # a pair has neither: only a sibling answer can hold it
    if gold and gold in text:
        return item.answer
    if item.kind == "span":
        numbers = _NUMBER.findall(item.answer or "")
        as_written = norm(item.answer or "") in text or bool(numbers) and set(numbers) <= set(_NUMBER.findall(text))
        return item.answer if item.answer and as_written else None
    if similar is None:
        return None
    if item.kind == "pair":
        twin = twin_shown(item.question, passage, shown, asked, similar)
        return brief(twin, words) if twin else None
    said, candidates = item.evidence or item.answer, [x for t in shown for x in sentences(t)]
    if not said or not candidates:
        return None
    score, best = max(zip(similar(said, candidates), candidates, strict=True))
    return best if score >= SAME_SENTENCE else None


def twin_shown(
    question: str | None, passage: str | None, shown: Sequence[str], asked: Sequence[str | None], similar: Similar
) -> str | None:
    """The shown text of a withheld record's twin, or None: a shown record asking its `question` in other words
    (`asked`: the question of each shown text, None for a document) or a shown passage saying what its `passage`
    says."""
    pairs = [(q, t) for q, t in zip(asked, shown, strict=False) if q]
    if question and pairs:
        score, twin = max(zip(similar(question, [q for q, _ in pairs]), (t for _, t in pairs), strict=True))
        if score >= SAME_QUESTION:
            return twin
    if passage and shown:
        score, twin = max(zip(similar(passage, list(shown)), shown, strict=True))
        if score >= SAME_ANSWER:
            return twin
    return None


def stable_hash(seed: int, tag: str, key: str) -> int:
    """A stable 64-bit number for `key` under `tag` (the same in every run and process)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\x1f{tag}\x1f{key}".encode(), digest_size=8).digest())


def _fraction(seed: int, tag: str, key: str) -> float:
    """A stable number in [0, 1) for `key` (so a record's role never changes between runs)."""
    return stable_hash(seed, tag, key) / 2**64


def groups(embeddings: np.ndarray | None, n: int, threshold: float) -> list[int]:
    """A group number per record: records whose (prompt) embeddings are closer than `threshold`, directly or
    through others, share one (the same question asked twice, in other words); each record alone without them."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if embeddings is not None and n:
        e = np.asarray(embeddings, dtype=np.float32)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        for i, j in zip(*np.nonzero(np.triu(e @ e.T > threshold, 1)), strict=True):
            parent[root(int(i))] = root(int(j))
    return [root(i) for i in range(n)]


def plan_items(
    records: Sequence[CorpusRecord],
    *,
    abstain_share: float = 0.12,
    val_fraction: float = 0.05,
    heldout_fraction: float = HELDOUT_FRACTION,
    generated: int = 4,
    spans: int = 0,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
    group_threshold: float = 0.7,
    exclude_questions: Iterable[str] = (),
    exclude_texts: Iterable[str] = (),
) -> Plan:
    """Which records the store holds and which questions are asked, train and validation split by record.
    With `embeddings` (one row per record), paraphrased records go together: a record near a held-out one is
    dropped with it, and near-duplicates are validated together. A record is withheld alone, so the
    paraphrases left in the store teach its question to answer from another record (`build_examples`).
    `spans` questions per passage are written around short answer spans (`span_questions`). An evaluation set
    is never trained on: records that share a sentence with `exclude_texts` are dropped, and so are questions
    that repeat one of `exclude_questions`."""

    if not 0.0 <= abstain_share < 1.0:
        raise TrainingError(f"abstain_share must be from 0 to below 1, got {abstain_share}")
    banned = {norm(s) for text in exclude_texts for s in sentences(text)}
    recs = list(records)
    evaluated = [r for r in recs if banned and any(norm(s) in banned for s in sentences(r.response))]
    recs = [r for r in recs if r not in evaluated]
    held, rule = heldout_flags(recs, heldout_fraction, seed)
    group = groups(embeddings, len(recs), group_threshold)
    first: dict[int, str] = {}
    for r, g in zip(recs, group, strict=True):
        first[g] = min(first.get(g, r.id), r.id)
    held_groups = {g for g, h in zip(group, held, strict=True) if h}
    near_held = sum(g in held_groups and not h for g, h in zip(group, held, strict=True))
    held = [g in held_groups for g in group]
    held_q = {norm(r.prompt) for r, h in zip(recs, held, strict=True) if h} | {norm(q) for q in exclude_questions}
    held_text = [norm(r.response) for r, h in zip(recs, held, strict=True) if h]
    store: list[CorpusRecord] = []
    items: list[Item] = []
    seen: set[str] = set()
    dropped = duplicates = 0
    for r, h, g in zip(recs, held, group, strict=True):
        if h:
            continue
        withheld = _fraction(seed, "abstain", r.id) < abstain_share  # alone: its paraphrases stay to answer it
        split = "val" if _fraction(seed, "val", first[g]) < val_fraction else "train"
        if not withheld:
            store.append(r)
        role = "abstain" if withheld else "answer"
        asked = [(r.prompt, None, "pair", None)] if r.kind == "pair" else []
        asked += [(q, a, "generated", a) for q, a in passage_questions(r.response, generated)]
        title = r.prompt if r.kind == "text" else None
        asked += [(s.question, s.answer, "span", s.sentence) for s in span_questions(r.response, title, spans)]
        for q, a, kind, evidence in asked:
            key = norm(q)
            if key in held_q or (evidence is not None and any(norm(evidence) in t for t in held_text)):
                dropped += 1
                continue
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            items.append(Item(" ".join(q.split()), a, r.id, kind, role, split, evidence))
    if not items:
        raise TrainingError("no training questions: the corpus has no records outside the held-out split")
    info = {
        "records": len(recs) + len(evaluated),
        "evaluation_records_dropped": len(evaluated),
        "heldout": sum(held) - near_held,
        "heldout_rule": rule,
        "near_heldout_dropped": near_held,
        "store": len(store),
        "withheld": len(recs) - sum(held) - len(store),  # held counts the near-held-out records too
        "questions": len(items),
        "generated": sum(i.kind != "pair" for i in items),
        "span_questions": sum(i.kind == "span" for i in items),
        "dropped_as_heldout": dropped,
        "duplicates": duplicates,
        "abstain_share": abstain_share,
    }
    return Plan(store, items, info)


def build_examples(
    items: Iterable[Item],
    layer: Layer,
    not_found: str,
    *,
    progress: Callable[[int], None] | None = None,
    unreferenced: list[tuple[str, list[dict[str, str]], str]] | None = None,
    passages: dict[str, str] | None = None,
    similar: Similar | None = None,
    questions: dict[str, str] | None = None,
    answer_words: int = BRIEF_WORDS,
) -> tuple[list[Example], dict[str, int]]:
    """Each item asked through `layer`; the target answers from the prompt's reference or, when the record is
    withheld from the store, says `not_found` (the layer's own words), unless another record in the prompt
    answers it (`found_elsewhere`; `passages` and `questions`, record id -> text and chat question, and
    `similar` find it said or asked in other words): then it answers from that one (role "twin"), as a
    question whose own record is missing must (a held-out one). Only documents teach "not found": a question
    of a withheld chat record (one in `questions`) that no shown text answers is left out, since a chat
    record's twins answer it in other words (round 7 answered "Should I trust you for medical advice?" with
    "not found" over "Is it a good idea to rely on you for health advice?"), and the layer's retrieval gate, not
    the model, abstains out of corpus. A chat record's target is the opening of its answer, at most
    `answer_words` (whole sentences). Counted: those (`chat_not_found`), the skipped questions the layer gives
    no reference for and answerable ones whose passage (or answer sentence) the prompt does not show. The
    prompts the layer sends without a reference go to `unreferenced` as (question, messages, split), when it
    is given (anchoring examples)."""
    out: list[Example] = []
    counts = {"no_reference": 0, "gold_not_shown": 0, "answered_by_another": 0, "chat_not_found": 0}
    chat = questions or {}
    for n, it in enumerate(items, 1):
        got = layer(it.question)
        if progress is not None:
            progress(n)
        if got is None or not got[1]:
            counts["no_reference"] += 1
            if got is not None and unreferenced is not None:
                unreferenced.append((it.question, got[0], it.split))
            continue
        messages, shown = got
        role = it.role
        if it.role == "abstain":
            passage, texts = (passages or {}).get(it.record), list(shown.values())
            asked = [chat.get(r) for r in shown]
            found = found_elsewhere(it, texts, passage, similar, asked, answer_words)
            target = found or not_found
            if found:  # the held-out case: its own record is missing, another answers it
                counts["answered_by_another"] += 1
                role = "twin"
            elif it.record in chat:  # a chat record's twins say it in other words: "not found" is no sure target
                counts["chat_not_found"] += 1
                continue
        else:
            text = shown.get(it.record)
            needed = it.evidence or it.answer
            if text is None or (needed is not None and norm(needed) not in norm(text)):
                counts["gold_not_shown"] += 1
                continue
            target = it.answer if it.answer is not None else brief(text, answer_words)
        out.append(Example(it.question, messages, target, role, it.kind, it.record, it.split))
    return out, counts


def write_examples(path: Any, examples: Sequence[Example]) -> str:
    """Write examples as JSONL (one a line) and return the sha256 of what was written (the data hash)."""
    text = "".join(json.dumps(asdict(e), ensure_ascii=False, sort_keys=True) + "\n" for e in examples)
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def read_examples(path: Any) -> tuple[list[Example], str]:
    """Examples written by `write_examples`, and their data hash."""
    text = path.read_text(encoding="utf-8")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            out.append(Example(**json.loads(line)))
        except (ValueError, TypeError) as e:
            msg = f"{path}:{n}: not an example of this version ({e}); delete it or use --no-resume"
            raise TrainingError(msg) from None
    return out, hashlib.sha256(text.encode()).hexdigest()
