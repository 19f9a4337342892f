"""Question sets for `eval answers`: SQuAD 2.0 JSON and our own JSONL, split into ingested and held-back articles.

SQuAD 2.0 (`.json`): `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}`. Every answer's `answer_start` must point at
its text in the context (checked; an error names the file and the field).

Our JSONL (`.jsonl`, one question a line)::

    {"question": str, "answers": [str, ...], "context"?: str, "title"?: str, "id"?: str, "is_impossible"?: bool}

Lines with the same `title` make one article; equal contexts are one paragraph. `title` defaults to the
context's first words. A question with answers needs a `context` that holds one of them; one with no answers
(or `is_impossible`) is unanswerable: adversarial when it has a context, out-of-corpus when it has none.

Articles are split deterministically into ingested and held back (a hash of the title and a seed); every
question of a held-back article is out-of-corpus, whatever its answers say.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError

ANSWERABLE, ADVERSARIAL, OUT_OF_CORPUS = "answerable", "adversarial", "out_of_corpus"
KINDS = (ANSWERABLE, ADVERSARIAL, OUT_OF_CORPUS)
HELD_BACK_FRACTION = 0.25


class SquadError(ShvayambhuError, ValueError):
    """A question set that cannot be read; the message names the file and the field or line."""


@dataclass
class Article:
    """One titled document: its paragraphs are what the store holds when it is ingested."""

    title: str
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Question:
    """One question: its gold answers (empty for unanswerable), its kind, and where it was asked from."""

    id: str
    question: str
    answers: list[str]
    kind: str  # answerable | adversarial | out_of_corpus
    article: str
    context: str = ""
    impossible: bool = False


@dataclass
class QuestionSet:
    """Articles and their questions, after the split: `ingested` titles go into the store, the rest do not."""

    path: str
    articles: list[Article]
    questions: list[Question]
    ingested: list[str]
    held_back: list[str]

    def counts(self) -> dict[str, int]:
        """Questions of each kind."""
        return {k: sum(q.kind == k for q in self.questions) for k in KINDS}

    def store_records(self) -> list[dict[str, Any]]:
        """The ingested paragraphs as JSONL records of titled passages (`"kind": "text"`)."""
        keep = set(self.ingested)
        return [
            {"prompt": a.title, "response": p, "kind": "text", "meta": {"article": a.title, "paragraph": i}}
            for a in self.articles
            if a.title in keep
            for i, p in enumerate(a.paragraphs)
        ]


def split_articles(
    titles: list[str], fraction: float = HELD_BACK_FRACTION, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(ingested, held back) titles: the `fraction` whose seeded hash is smallest are held back (at least one of
    two or more articles, never all); both lists keep the input order."""
    if not 0 <= fraction < 1:
        raise SquadError(f"the held-back fraction must be at least 0 and below 1, got {fraction}")
    unique = list(dict.fromkeys(titles))
    n = round(len(unique) * fraction)
    if fraction > 0 and len(unique) >= 2:
        n = min(max(n, 1), len(unique) - 1)

    def key(t: str) -> bytes:
        return hashlib.blake2b(f"{seed}\x1fheld-back\x1f{t}".encode(), digest_size=8).digest()

    held = set(sorted(unique, key=key)[:n])
    return [t for t in unique if t not in held], [t for t in unique if t in held]


def load_questions(path: str | Path, *, held_back: float = HELD_BACK_FRACTION, seed: int = 0) -> QuestionSet:
    """Read a SQuAD 2.0 `.json` file or our `.jsonl` and split its articles (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SquadError(f"{path}: no such file (give a SQuAD 2.0 .json file or a .jsonl of questions)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SquadError(f"{path}: not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    if path.suffix.lower() == ".jsonl":
        articles, raw = _read_jsonl(path, text)
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SquadError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        articles, raw = _read_squad(path, doc)
    ingested, held = split_articles([a.title for a in articles], held_back, seed)
    out_titles = set(held)
    questions = []
    for q in raw:
        if q.article in out_titles or not q.context:
            q.kind = OUT_OF_CORPUS
        elif q.impossible or not q.answers:
            q.kind = ADVERSARIAL
        else:
            q.kind = ANSWERABLE
        questions.append(q)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SquadError(f"{path}: question id {dup!r} appears more than once; ids must be unique")
    return QuestionSet(str(path), articles, questions, ingested, held)


def _need(obj: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise SquadError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, typ) or (typ is str and not value.strip()):
        what = "a non-empty string" if typ is str else f"a{'n' if typ.__name__[0] in 'aeiou' else ''} {typ.__name__}"
        raise SquadError(f"{where}.{key}: must be {what}, got {value!r:.60}")
    return value


def _read_squad(path: Path, doc: Any) -> tuple[list[Article], list[Question]]:
    data = _need(doc, "data", list, f"{path}")
    articles: dict[str, Article] = {}
    questions: list[Question] = []
    for ai, art in enumerate(data):
        where = f"{path}: data[{ai}]"
        title = " ".join(_need(art, "title", str, where).split())
        article = articles.setdefault(title, Article(title))
        for pi, para in enumerate(_need(art, "paragraphs", list, where)):
            pwhere = f"{where}.paragraphs[{pi}]"
            context = _need(para, "context", str, pwhere)
            article.paragraphs.append(context)
            for qi, qa in enumerate(_need(para, "qas", list, pwhere)):
                qwhere = f"{pwhere}.qas[{qi}]"
                qid = str(qa.get("id") or f"{ai}.{pi}.{qi}") if isinstance(qa, dict) else ""
                question = _need(qa, "question", str, qwhere)
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise SquadError(f"{qwhere}.is_impossible: must be true or false, got {impossible!r}")
                golds = []
                for gi, ans in enumerate(qa.get("answers") or []):
                    gwhere = f"{qwhere}.answers[{gi}]"
                    gold = _need(ans, "text", str, gwhere)
                    start = _need(ans, "answer_start", int, gwhere)
                    if context[start : start + len(gold)] != gold:
                        found = context.find(gold)
                        hint = f" (the text is at {found})" if found >= 0 else " (the text is not in the context)"
                        raise SquadError(f"{gwhere}.answer_start: {start} does not point at {gold!r}{hint}")
                    golds.append(gold)
                if not impossible and not golds:
                    raise SquadError(f"{qwhere}.answers: empty, but is_impossible is not true")
                questions.append(Question(qid, question.strip(), golds, "", title, context, impossible))
    return list(articles.values()), questions


def _read_jsonl(path: Path, text: str) -> tuple[list[Article], list[Question]]:
    articles: dict[str, Article] = {}
    questions: list[Question] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SquadError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise SquadError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        question = _need(obj, "question", str, where)
        answers = obj.get("answers", [])
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
            raise SquadError(f"{where}: field 'answers' must be a list of non-empty strings")
        context = obj.get("context") or ""
        if not isinstance(context, str):
            raise SquadError(f"{where}: field 'context' must be a string")
        impossible = bool(obj.get("is_impossible", False)) or not answers
        if answers and not context.strip():
            raise SquadError(f"{where}: a question with answers needs field 'context' (the passage that answers it)")
        if answers and not any(a in context for a in answers):
            raise SquadError(f"{where}: none of the answers occurs in field 'context'")
        title = obj.get("title") or " ".join(context.split()[:8]) or f"question {n}"
        if not isinstance(title, str):
            raise SquadError(f"{where}: field 'title' must be a string")
        title = " ".join(title.split())
        if context.strip():
            article = articles.setdefault(title, Article(title))
            if context not in article.paragraphs:
                article.paragraphs.append(context)
        qid = str(obj.get("id") or f"line{n}")
        questions.append(Question(qid, question.strip(), list(answers), "", title, context, impossible))
    return list(articles.values()), questions
