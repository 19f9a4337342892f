"""`shvayambhu eval answers`: answers end to end, through the real layer, beside three baselines.

The ingested articles' paragraphs go into a fresh throwaway store as the user's documents (titled passages,
`"kind": "text"`); each question is then asked under every configuration:

- `top-passage`: the top retrieved passage returned as the answer, no model (confidence: its score);
- `ours-B`: `Shvayambhu.ask(question, backend=B, use_memory=False)`, the whole layer;
- `naive-B`: LangChain's "stuff the top-k passages into the prompt" chain (langchain-core ChatPromptTemplate |
  chat model | StrOutputParser) over our retriever's top k, with the same model (confidence: top score);
- `noret-B`: the layer with `use_retrieval=False` (the model on its own).

Answerable questions score SQuAD exact match, token F1 and "contains a gold answer"; unanswerable ones
(out-of-corpus: their article was held back; adversarial: `is_impossible`) score whether the answer abstains
(`low_confidence`, `done_reason == "abstain"`, or the text declines: `qa_metrics.abstained`). Calibration is
over answerable questions, an answer being correct when its F1 >= 0.5.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from index.errors import ShvayambhuError
from rag.config import on_fresh_store
from rag.consciousness import metacognition as meta
from rag.eval import qa_metrics as qm
from rag.eval.metrics import bootstrap_ci
from rag.eval.squad import ADVERSARIAL, ANSWERABLE, KINDS, OUT_OF_CORPUS, Question, QuestionSet

GEN_BACKENDS = ("mlx", "blt", "ollama")
CORRECT_F1 = 0.5
CONFIDENT = 0.8

# The classic LangChain RAG prompt ("rlm/rag-prompt"): the naive baseline, as a user would first build it.
NAIVE_SYSTEM = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to answer "
    "the question. If you don't know the answer, say that you don't know. Use three sentences maximum and keep "
    "the answer concise.\n\n{context}"
)


class AnswersError(ShvayambhuError):
    """The answer benchmark cannot run as asked."""


@dataclass(frozen=True)
class Config:
    """One way of answering: `kind` is top, ours, naive or noret; `backend` the generator (None for top)."""

    name: str
    kind: str
    backend: str | None = None


CONFIG_KINDS = ("top", "ours", "naive", "noret")


def configurations(backends: Sequence[str], kinds: Sequence[str] = CONFIG_KINDS) -> list[Config]:
    """The top-passage baseline (always), then for each backend: ours, the naive chain, no retrieval (those of
    `kinds`)."""
    out = [Config("top-passage", "top")]
    for b in backends:
        out += [Config(f"{k}-{b}", k, b) for k in ("ours", "naive", "noret") if k in kinds]
    return out


def _names(text: str, allowed: Sequence[str], flag: str, what: str) -> list[str]:
    """Comma-separated names, lower-cased, duplicates dropped; an unknown one is an error naming the known."""
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in allowed]
    if bad:
        raise AnswersError(f"{flag}: unknown {what} {bad[0]!r}; use any of {', '.join(allowed)}")
    return names


def parse_kinds(text: str) -> list[str]:
    """`"ours,naive"` -> the configuration kinds to run (the top passage runs whatever is asked)."""
    return _names(text, CONFIG_KINDS, "--configs", "configuration")


def parse_backends(text: str) -> list[str]:
    """`"mlx,blt"` -> ["mlx", "blt"]; unknown names are a usage error naming the ones there are."""
    return _names(text, GEN_BACKENDS, "--backends", "backend")


def pick_questions(qset: QuestionSet, limit: int | None) -> list[Question]:
    """Every question, or at most `limit` of each kind: the ones whose id hashes smallest (stable across runs)."""
    if limit is None:
        return list(qset.questions)

    def key(q: Question) -> bytes:
        return hashlib.blake2b(q.id.encode(), digest_size=8).digest()

    keep = {q.id for k in KINDS for q in sorted((q for q in qset.questions if q.kind == k), key=key)[:limit]}
    return [q for q in qset.questions if q.id in keep]


# ---- answering ----------------------------------------------------------------------------------------


def _reply(text: str, confidence: float, sources: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"answer": text, "confidence": float(confidence), "sources": sources, **extra}


def _ours(a: Any, cfg: Config, question: str) -> dict[str, Any]:
    ans = a.ask(question, backend=cfg.backend, use_memory=False, use_retrieval=cfg.kind != "noret")
    used = [s for s in ans.sources if s.used] or list(ans.sources)
    return _reply(
        ans.answer,
        ans.confidence,
        [{"id": s.id, "score": s.score, "text": s.response} for s in used],
        low_confidence=ans.low_confidence,
        done_reason=ans.done_reason,
        object=ans,
    )


def _top(a: Any, cfg: Config, question: str) -> dict[str, Any]:
    hits = a.search(question, 1)
    if not hits:
        return _reply("", 0.0, [])
    h = hits[0]
    return _reply(h.response, h.score, [{"id": h.id, "score": h.score, "text": h.response}])


def naive_chain(a: Any, backend: str) -> Callable[[str], dict[str, Any]]:
    """LangChain's stuff-the-top-k RAG chain over our retriever, with the model of `backend` (already loaded by
    the assistant: the same weights as `ours`)."""
    from langchain_core.output_parsers import StrOutputParser  # lazy: langchain loads only for this baseline
    from langchain_core.prompts import ChatPromptTemplate

    from rag.langchain import ShvayambhuChatModel, ShvayambhuRetriever, blt_prompt, format_exemplars

    model = ShvayambhuChatModel(backend=backend, settings=a.settings)
    model._backend_cache = a.backend(backend)
    retriever = ShvayambhuRetriever(assistant=a, k=a.settings.retrieval.k)
    if backend == "blt":  # the BLT reads its context as its trained exemplar block
        prompt, stuff = blt_prompt(), format_exemplars
    else:
        prompt = ChatPromptTemplate.from_messages([("system", NAIVE_SYSTEM), ("human", "{question}")])

        def stuff(docs: list[Any]) -> str:
            return "\n\n".join(d.page_content for d in docs)

    chain = prompt | model | StrOutputParser()

    def answer(question: str) -> dict[str, Any]:
        docs = retriever.invoke(question)
        text = chain.invoke({"context": stuff(docs), "question": question})
        top = float(docs[0].metadata.get("score", 0.0)) if docs else 0.0
        srcs = [{"id": d.id, "score": d.metadata.get("score"), "text": d.page_content} for d in docs]
        return _reply(text, top, srcs)

    return answer


def answerer(a: Any, cfg: Config) -> Callable[[str], dict[str, Any]]:
    """question -> reply dict (answer, confidence, cited sources, ...) for one configuration."""
    if cfg.kind == "top":
        return lambda q: _top(a, cfg, q)
    if cfg.kind == "naive":
        return naive_chain(a, str(cfg.backend))
    return lambda q: _ours(a, cfg, q)


# ---- scoring ------------------------------------------------------------------------------------------


def score(q: Question, reply: dict[str, Any]) -> dict[str, Any]:
    """One answer's metrics: abstained for every kind; EM, F1, contains, correct and citation precision for an
    answerable question; faithfulness for any answer that does not abstain."""
    text = reply["answer"]
    gave_up = qm.abstained(text, reply.get("low_confidence", False), reply.get("done_reason", "stop"))
    cited = [s["text"] for s in reply["sources"] if s.get("text")]
    declines = reply.get("done_reason") == "abstain" or qm.says_it_does_not_know(text)
    m: dict[str, Any] = {"abstained": gave_up, "declines": declines, "confidence": reply["confidence"]}
    if q.kind == ANSWERABLE:
        f1 = qm.token_f1(text, q.answers)
        m.update(
            em=qm.exact_match(text, q.answers),
            f1=f1,
            contains=qm.contains_gold(text, q.answers),
            correct=bool(f1 is not None and f1 >= CORRECT_F1),
            citation_precision=qm.citation_precision(cited, q.answers),
        )
    m["faithfulness"] = None if gave_up else qm.faithfulness(text, cited)
    return m


def _over(fn: Callable[..., float | None]) -> Callable[[Sequence[tuple[float, bool]]], float | None]:
    """A metric of (scores, labels) as one of (score, label) pairs, for the bootstrap."""
    return lambda ps: fn([p[0] for p in ps], [p[1] for p in ps]) if ps else None


def summarize(rows: list[dict[str, Any]], names: Sequence[str], *, resamples: int = 1000) -> dict[str, Any]:
    """Per configuration: means with seeded bootstrap 95% intervals, calibration, and the risk-coverage curve."""
    out: dict[str, Any] = {}
    for name in names:
        mine = [r for r in rows if r["config"] == name and not r.get("error")]
        ans = [r for r in mine if r["kind"] == ANSWERABLE]
        m: dict[str, Any] = {}

        def ci(values: list[Any]) -> dict[str, Any]:
            return bootstrap_ci(values, resamples=resamples, seed=0)

        for key in ("em", "f1", "contains", "citation_precision"):
            m[key] = ci([r["metrics"][key] for r in ans])
        m["f1_answered"] = ci([r["metrics"]["f1"] for r in ans if not r["metrics"]["abstained"]])
        m["false_abstention"] = ci([float(r["metrics"]["abstained"]) for r in ans])
        for kind in (OUT_OF_CORPUS, ADVERSARIAL):
            m[f"abstain_{kind}"] = ci([float(r["metrics"]["abstained"]) for r in mine if r["kind"] == kind])
            # the answer itself says so (a low-confidence flag alone still shows the user its text)
            m[f"declines_{kind}"] = ci([float(r["metrics"]["declines"]) for r in mine if r["kind"] == kind])
        m["faithfulness"] = ci([r["metrics"]["faithfulness"] for r in mine])
        pairs = [(r["metrics"]["confidence"], r["metrics"]["correct"]) for r in ans]

        m["auroc"] = qm.bootstrap_stat(pairs, _over(qm.auroc), resamples=resamples)
        m["ece"] = qm.bootstrap_stat(pairs, _over(qm.ece), resamples=resamples)
        m["wrong_confident"] = qm.bootstrap_stat(pairs, _over(qm.wrong_when_confident), resamples=resamples)
        m["aurc"] = qm.bootstrap_stat(pairs, _over(qm.aurc), resamples=resamples)
        coverage, risk = qm.risk_coverage([p[0] for p in pairs], [p[1] for p in pairs])
        confident = sum(p[0] >= CONFIDENT for p in pairs)
        out[name] = {
            "metrics": m,
            "counts": {k: sum(r["kind"] == k for r in mine) for k in KINDS},
            "confident_answers": confident,
            "errors": sum(1 for r in rows if r["config"] == name and r.get("error")),
            "first_error": next((r["error"] for r in rows if r["config"] == name and r.get("error")), None),
            "seconds": ci([r.get("seconds") for r in mine])["mean"],
            "risk_coverage": {"coverage": coverage, "risk": risk},
        }
    return out


def cross_validated_calibration(answered: list[tuple[Any, dict[str, Any]]], *, resamples: int = 1000) -> dict:
    """AUROC and "wrong at >= 0.8" of confidences re-fitted on 4/5 of these answerable questions and scored on the
    fifth (`metacognition.cross_validated`, the retrieval logistic kept): how the answer logistics do on questions
    they were not fitted on. Empty with fewer than 10 answers with details, or without right and wrong ones."""
    kept = [(a.details, bool(m["correct"]), a.done_reason == "abstain") for a, m in answered if a.details is not None]
    labels = [ok for _, ok, _ in kept]
    if len(kept) < 10 or len(set(labels)) < 2:
        return {}
    scores = meta.cross_validated([d for d, _, _ in kept], labels, [ab for _, _, ab in kept])
    pairs = list(zip(scores, labels, strict=True))
    return {
        "auroc_cv": qm.bootstrap_stat(pairs, _over(qm.auroc), resamples=resamples),
        "wrong_confident_cv": qm.bootstrap_stat(pairs, _over(qm.wrong_when_confident), resamples=resamples),
    }


# ---- the run ------------------------------------------------------------------------------------------


def eval_settings(settings: Any, data_dir: Path) -> Any:
    """A copy of `settings` on a fresh embedded store in `data_dir` (never the user's store or server)."""
    s = on_fresh_store(settings, data_dir, "answers_eval")
    s.retrieval.exclude_split = ""
    return s


def ingest_documents(a: Any, qset: QuestionSet, folder: Path) -> Any:
    """Write the ingested articles' paragraphs as JSONL in `folder` and ingest them through `a.ingest`."""
    records = qset.store_records()
    if not records:
        raise AnswersError(f"{qset.path}: no article is left to ingest; give more than one article")
    path = folder / "documents.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return a.ingest([path], progress=False)


def available(a: Any, backends: Sequence[str]) -> tuple[list[str], list[str]]:
    """(backends that load, notes on those that do not): Ollama only when its server answers."""
    from rag.backends.base import BackendError
    from rag.backends.select import ollama_answers

    ok, notes = [], []
    for b in backends:
        if b == "ollama":
            up, why = ollama_answers(a.settings)
            if not up:
                notes.append(f"ollama skipped: {why}")
                continue
        try:
            a.backend(b)
        except (BackendError, ShvayambhuError) as e:
            notes.append(f"{b} skipped: {e}")
            continue
        ok.append(b)
    return ok, notes


def run_answers(
    qset: QuestionSet,
    settings: Any,
    *,
    backends: Sequence[str] = ("mlx", "blt"),
    kinds: Sequence[str] = CONFIG_KINDS,
    limit: int | None = None,
    out: Path | None = None,
    progress: Callable[[str], None] | None = None,
    calibrate: Any | None = None,
    resamples: int = 1000,
) -> dict[str, Any]:
    """Ingest, ask every picked question under every configuration, score; returns the report (see
    `answers_report.write_outputs`). `calibrate` is an assistant whose `fit_calibration` gets the (Answer,
    correct) pairs of our layer's answers (an unanswerable question's answer is never correct)."""
    from rag.api import Shvayambhu  # lazy: the store and the embedding model load only when the run starts

    questions = pick_questions(qset, limit)
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[Any, bool]] = []
    answered: dict[str, list[tuple[Any, dict[str, Any]]]] = {}  # ours, answerable: for cross-validated calibration
    with tempfile.TemporaryDirectory(prefix="shvayambhu-answers-") as tmp:
        a = Shvayambhu(eval_settings(settings, Path(tmp) / "store"))
        summary = ingest_documents(a, qset, Path(tmp))
        usable, notes = available(a, backends)
        notes += [f"paragraph not ingested: {r.reason}" for r in summary.rejections]
        configs = configurations(usable, kinds)
        for cfg in configs:
            fn = answerer(a, cfg)
            for i, q in enumerate(questions, 1):
                row: dict[str, Any] = {"config": cfg.name, "id": q.id, "kind": q.kind, "question": q.question}
                t0 = time.perf_counter()
                try:
                    reply = fn(q.question)
                except ShvayambhuError as e:
                    row["error"] = str(e)
                else:
                    row["seconds"] = time.perf_counter() - t0
                    row["answer"] = reply["answer"]
                    row["metrics"] = score(q, reply)
                    row["sources"] = [{k: s.get(k) for k in ("id", "score")} for s in reply["sources"]]
                    if cfg.kind == "ours" and "object" in reply:
                        pairs.append((reply["object"], bool(row["metrics"].get("correct", False))))
                        details = reply["object"].details
                        row["features"] = dict(details.features) if details is not None else None
                        if q.kind == ANSWERABLE:
                            answered.setdefault(cfg.name, []).append((reply["object"], row["metrics"]))
                rows.append(row)
                if progress:
                    shown = row.get("error") or " ".join(str(row.get("answer", "")).split())[:60]
                    progress(f"[{cfg.name}] {i}/{len(questions)} {q.kind}: {shown}")
        fitted = calibrate.fit_calibration(pairs) if calibrate is not None else None
    names = [c.name for c in configs]
    configs_summary = summarize(rows, names, resamples=resamples)
    for name, got in answered.items():
        configs_summary[name]["metrics"].update(cross_validated_calibration(got, resamples=resamples))
    report = {
        "input": qset.path,
        "questions": {k: sum(q.kind == k for q in questions) for k in KINDS},
        "articles": {"ingested": len(qset.ingested), "held_back": qset.held_back},
        "limit": limit,
        "backends": list(backends),
        "configs": configs_summary,
        "notes": notes,
        "calibration": fitted,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if out is not None:
        from rag.eval.answers_report import write_outputs  # lazy: matplotlib loads only when files are written

        write_outputs(report, rows, Path(out))
    report["rows"] = rows
    return report
