"""The ask path: embed once, retrieve exemplars and memories, compete in the workspace, build the prompt,
generate, clean, score confidence, remember. Streaming and non-streaming share every step, so they give the
same text.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index.fusion import FusionOptions
from index.retrieve import Hit
from rag.answer import Answer, Source
from rag.backends.base import Backend, BackendError, Chunk, Generation, GenerationOptions, PromptProfile
from rag.backends.options import for_confidence
from rag.config import Settings
from rag.consciousness import metacognition as meta
from rag.consciousness.asked import asks_phrase
from rag.consciousness.calibration import SUPPORTED, Reference, Weights, support
from rag.consciousness.candidates import candidates, focus_exemplars, normalise_history, preface
from rag.consciousness.extract import Extract, extract_answer, unsaid_names
from rag.consciousness.memory import Memory, MemoryStream, exchange_text, importance
from rag.consciousness.prompt import compact_candidates, flatten, layout, number_exemplars, size
from rag.consciousness.selfmodel import SelfModel
from rag.consciousness.workspace import BudgetError, Workspace, evict, measurer, pack
from rag.exemplars import exemplars
from rag.postprocess import Cleaner, attribute

log = logging.getLogger(__name__)
BLOCK_OVERHEAD = 8  # bytes (or tokens) reserved per workspace block: its number label and separator
UNVERIFIED = "(not kept: no source in the documents supported that answer)"
# A quoted phrase or a re-telling (the BLT's) needs retrieval more likely right than not: below this retrieval
# confidence the layer would not stand behind either (the generating backends still answer, flagged by confidence)
RELEVANT = 0.5
EXTRACTED = "extract"  # the done_reason of an answer taken from a passage's sentence, not generated


@dataclass
class Prepared:
    """Everything decided before the backend is called."""

    question: str
    messages: list[dict[str, str]]
    workspace: Workspace
    hits: list[Hit]  # exemplars in the prompt, in citation-number order
    memories: list[Memory]
    confidence: meta.Confidence
    vector: np.ndarray | None
    timings: dict[str, float]
    started: float
    warnings: list[str] = field(default_factory=list)
    preface: str = ""  # the layer's own opening words (nothing in the documents answers this), before the model's
    weights: Weights | None = None  # the store's calibrated confidence weights (None: the shipped defaults)
    extract: Extract | None = None  # the phrase of a retrieved passage that answers a factoid question
    unstated: bool = False  # a factoid question whose document passages hold no phrase of the kind it asks for


def budget_for(settings: Settings, profile: PromptProfile) -> tuple[int, str]:
    """(budget, unit) of a backend's prompt: its profile's own budget in its own unit when it has one (the MLX
    model: real tokens), else [workspace] budget_tokens when the unit is tokens (or the profile leaves the unit
    to the layer and budget_tokens is set), else [workspace] budget_bytes; capped by what its context holds."""
    w = settings.workspace
    unit = profile.unit or ("tokens" if w.budget_tokens > 0 else "bytes")
    size = profile.budget if profile.budget is not None else (w.budget_tokens if unit == "tokens" else w.budget_bytes)
    return (min(size, profile.budget_cap) if profile.budget_cap else size), unit


def prepare(
    question: str,
    *,
    settings: Settings,
    backend: Backend,
    embed: Callable[[str], np.ndarray] | None,
    collection: Any | None,
    memory: MemoryStream | None,
    k: int | None = None,
    history: list[Any] | None = None,
    use_retrieval: bool = True,
    lexical: Any | None = None,
    fusion: FusionOptions | None = None,
    reference: Reference | None = None,
    weights: Weights | None = None,
) -> Prepared:
    """Retrieval, recall, confidence, competition and prompt: everything up to the backend call. `lexical` is
    the corpus's BM25 index, needed when [retrieval] mode is hybrid or lexical; `reference` and `weights` are
    the store's confidence calibration (`rag.consciousness.calibration`; None: the shipped defaults)."""
    started = time.perf_counter()
    now = time.time()
    r = settings.retrieval
    k = r.k if k is None else k
    vector = embed(question) if embed is not None and (use_retrieval or memory is not None) else None
    hits: list[Hit] = []
    if use_retrieval and collection is not None and vector is not None and k > 0:
        hits = exemplars(collection, vector, r, k, text=question, lexical=lexical, fusion=fusion)
    memories = memory.recall(vector=vector, now=now) if memory is not None and vector is not None else []
    with_vectors = [h for h in hits if h.embedding is not None] or hits  # h.score is the dense cosine in every mode
    ev = meta.evidence(
        [h.score for h in with_vectors],
        [h.embedding for h in with_vectors if h.embedding is not None],
        [m.relevance or 0.0 for m in memories],  # reported only: memories never raise the confidence
        question=question,
        texts=[source_text(h) for h in hits],
        reference=reference,
    )
    conf = meta.assess(ev, settings.metacognition.low_confidence, weights)

    turns = (
        normalise_history(history)[-2 * max(settings.workspace.recent_turns, 0) :]
        if settings.workspace.recent_turns > 0
        else []
    )
    in_turns = {
        exchange_text(u["content"], answer)
        for u, v in zip(turns, turns[1:], strict=False)
        if u["role"] == "user" and v["role"] == "assistant"
        for answer in (v["content"], UNVERIFIED)  # an unverified answer was remembered without its words
    }
    memories = [m for m in memories if m.text not in in_turns]  # already in the prompt as a recent turn
    profile = backend.profile
    # A backend trained on clipped exemplars (the BLT) gets them clipped here too, so several fit its context.
    clip = profile.exemplar_bytes
    cands = candidates(SelfModel.from_settings(settings.self_model), hits, memories, turns, now, clip)
    # A backend with its own trained prompt layout (the BLT) says which kinds it can read and renders them.
    if profile.workspace_kinds is not None:
        cands = [c for c in cands if c.kind in profile.workspace_kinds]
    compact = profile.style == "compact"
    opening = ""
    if compact:
        cands = compact_candidates(cands, conf.low)
        if use_retrieval and not any(c.kind == "exemplar" for c in cands):  # nothing passed the gate: say so
            opening = preface(hits, collection is not None)
    # Focus and extraction both read the top passage's sentences: each sentence is embedded once.
    sentence_vector = functools.lru_cache(maxsize=512)(embed) if embed is not None else None
    if compact or profile.retells_only:  # a model that copies copies what answers
        focus_exemplars(cands, question, vector, sentence_vector)
    found, unstated = None, False
    if settings.workspace.extractive and use_retrieval and not conf.low and conf.retrieval >= RELEVANT:
        ready = sentence_vector is not None and vector is not None
        many = (lambda parts: np.stack([sentence_vector(p) for p in parts])) if ready else None
        found = extract_answer(question, hits, query_vector=vector, embed=many)
        unstated = found is None and asks_phrase(question) and any(h.metadata.get("kind") == "text" for h in hits)
    render_fn, base_fn = layout(profile)
    budget, unit = budget_for(settings, profile)
    measure = profile.measure or measurer(unit)
    counts = profile.count  # the backend's own tokenizer, chat template included

    def cost(messages: list[dict[str, str]]) -> int:
        return counts(messages) if counts else size(messages, measure)

    def total(ws: Workspace) -> int:
        return cost(render_fn(ws, question, confidence=conf.value, low_confidence=conf.low))

    base = cost(base_fn(question, low_confidence=conf.low))
    try:
        ws = pack(cands, budget - base, unit, overhead=BLOCK_OVERHEAD, measure=measure)
    except BudgetError:
        raise BudgetError(
            f"the question and the self-model need more than the prompt budget of {budget} {unit} "
            f"(the question and fixed instructions alone take {base}): raise [workspace] budget_{unit} "
            "or shorten the question"
        ) from None
    ws.budget = budget
    ws = evict(ws, total)
    messages = render_fn(ws, question, confidence=conf.value, low_confidence=conf.low)
    ws.used = cost(messages)
    numbers = number_exemplars(ws)
    in_prompt = sorted((c for c in ws.winners if c.kind == "exemplar"), key=lambda c: numbers[id(c)])
    recalled = [c.meta["memory"] for c in ws.winners if "memory" in c.meta]
    elapsed = (time.perf_counter() - started) * 1000
    return Prepared(
        question=question,
        messages=messages,
        workspace=ws,
        hits=[c.meta["hit"] for c in in_prompt],
        memories=recalled,
        confidence=conf,
        vector=vector,
        timings={"retrieve": elapsed},
        started=started,
        preface=opening,
        weights=weights,
        extract=found,
        unstated=unstated,
    )


def source_text(hit: Hit) -> str:
    """Everything a retrieved record says: what it is about and what it holds."""
    return "\n".join(t for t in dict.fromkeys((hit.prompt, hit.response, hit.document)) if t)


def sources_for(prep: Prepared, text: str, cited: list[int]) -> list[Source]:
    """The exemplars of the prompt, those the answer used first (numbered as the answer cites them)."""
    used = attribute(text, [h.response for h in prep.hits], cited)
    order = used + [i for i in range(1, len(prep.hits) + 1) if i not in used]
    out = []
    for number, i in enumerate(order, 1):
        h = prep.hits[i - 1]
        out.append(
            Source(
                id=h.id,
                score=h.score,
                prompt=h.prompt,
                number=number,
                used=i in used,
                response=h.response,
                category=str(h.metadata.get("category", "")),
                dense_rank=h.dense_rank,
                lexical_rank=h.lexical_rank,
                fused_score=h.fused_score,
                **Source.place_fields(h.metadata),
            )
        )
    return out


def quoted_sources(found: Extract, sources: list[Source]) -> list[Source]:
    """An extractive answer's sources: the passage it was taken from first (used, with the quoted sentence),
    then the prompt's others, renumbered."""
    h = found.hit
    first = next((s for s in sources if s.id == h.id), None) or Source(
        id=h.id,
        score=h.score,
        prompt=h.prompt,
        response=h.response,
        category=str(h.metadata.get("category", "")),
        dense_rank=h.dense_rank,
        lexical_rank=h.lexical_rank,
        fused_score=h.fused_score,
        **Source.place_fields(h.metadata),
    )
    first.used, first.quote = True, found.sentence
    out = [first] + [s for s in sources if s.id != h.id]
    for number, s in enumerate(out, 1):
        s.number = number
        if s is not first:
            s.used = False
    return out


def extracted(prep: Prepared, backend: Backend) -> Generation | None:
    """The extractive answer as the backend's generation (no model call), when the layer found one."""
    if prep.extract is None:
        return None
    return Generation(text=prep.extract.text, model=backend.model, backend=backend.name, done_reason=EXTRACTED)


def finish(
    prep: Prepared,
    generation: Generation,
    cleaner: Cleaner,
    *,
    settings: Settings,
    memory: MemoryStream | None,
    backend: Backend,
    options: GenerationOptions,
    generate_ms: float,
    show_prompt: bool = False,
) -> Answer:
    """Sources, confidence, memory write (and reflection when due) after the text is final."""
    text = cleaner.text
    abstained = generation.done_reason == "abstain"
    found = prep.extract if generation.done_reason == EXTRACTED else None
    # How far the sources in the prompt hold the answer: the generator's agreement with what it was given.
    held = max((support(text, source_text(h)) for h in prep.hits), default=0.0) if text and not abstained else 0.0
    if found is not None:  # a phrase of its sentence: held whole; how well it answers is the question's words in it
        held = support(text, found.sentence)
    conf = meta.update(
        prep.confidence,
        generation.probs,
        generation.entropies,
        settings.metacognition.low_confidence,
        support=None if abstained or found is not None else held,
        weights=prep.weights,
        extract=(found.fit, found.match, found.agree) if found is not None else None,
    )
    if prep.unstated and not abstained:  # a factoid question its passages do not answer: flagged, whatever is said
        conf = meta.doubted(conf, settings.metacognition.low_confidence)
    sources = sources_for(prep, text, cleaner.used)
    if found is not None:
        sources = quoted_sources(found, sources)
    answer = Answer(
        answer=text,
        sources=sources,
        confidence=conf.value,
        low_confidence=conf.low,
        backend=generation.backend,
        model=generation.model,
        timings=dict(prep.timings),
        prompt=flatten(prep.messages) if show_prompt else None,
        workspace=prep.workspace,
        messages=prep.messages,
        memories=prep.memories,
        session=memory.session if memory is not None else None,
        done_reason=generation.done_reason,
        details=conf,
        warnings=list(prep.warnings),
        grounded=held >= SUPPORTED,
    )
    answer.timings["generate"] = generate_ms
    t = time.perf_counter()
    if memory is not None and text and generation.done_reason != "abstain":  # nothing learnt from "I don't know"
        remember(answer, prep, memory, backend, options)
        answer.timings["memory"] = (time.perf_counter() - t) * 1000
    answer.timings["total"] = (time.perf_counter() - prep.started) * 1000
    return answer


def remember(
    answer: Answer, prep: Prepared, memory: MemoryStream, backend: Backend, options: GenerationOptions
) -> None:
    """Store the exchange, refresh the recalled memories' recency and reflect when it is due. Only an answer that
    a source supports, given at confidence above the low mark, is kept in the assistant's words; otherwise only
    what the user said is kept (who they are, what they asked), so a guess never comes back as context."""
    # Remembered under the question's embedding (already computed): recall finds an exchange by what was asked,
    # which an answer full of other words would dilute, and the memory write costs no second model call.
    if answer.grounded and not answer.low_confidence:
        memory.add_exchange(prep.question, answer.answer, vector=prep.vector)
    else:
        text = exchange_text(prep.question, UNVERIFIED)
        memory.add(text, kind="exchange", importance_score=importance(prep.question, ""), vector=prep.vector)
    memory.touch([m.id for m in prep.memories])
    if not memory.reflection_due():
        return

    def generate(messages: list[dict[str, str]]) -> str:
        return backend.generate(messages, options).text

    try:
        answer.reflections = memory.reflect(generate)
    except BackendError as e:  # the answer stands; the reflection is retried after the next exchange
        answer.warnings.append(f"reflection skipped: {e}")
        log.warning("reflection skipped: %s", e)


def options(prep: Prepared, backend: Backend) -> GenerationOptions:
    """The backend's sampling options for this question, with the retrieved answers to copy from when it copies."""
    opts = for_confidence(backend.profile.options, prep.confidence.low)
    if opts.copy_weight:
        focused = {c.meta["hit"].id: c.meta.get("focus") for c in prep.workspace.of_kind("exemplar")}
        opts.copy_sources = [focused.get(h.id) or h.response for h in reversed(prep.hits)]  # most relevant last
    return opts


def abstention(prep: Prepared, backend: Backend) -> Generation | None:
    """For a backend whose profile abstains when unsure (the BLT, which can only re-tell its exemplars), a plain
    "the corpus has nothing on this" when the evidence is weak, naming the nearest things the corpus holds;
    else None."""
    if not backend.profile.abstain_when_unsure:
        return None
    weak = prep.confidence.low or prep.confidence.retrieval < RELEVANT
    # a re-telling of passages that never say the name asked about ("the S3's filter") answers another question
    unsaid = unsaid_names(prep.question, [source_text(h) for h in prep.hits])
    if not (weak or unsaid):
        return None
    nearest = "; ".join(f"\u201c{' '.join(h.prompt.split())}\u201d" for h in prep.hits[:3])
    why = (
        f"My corpus has nothing on this (confidence {prep.confidence.value:.2f})"
        if weak
        else f"My corpus never mentions {', '.join(unsaid)}"
    )
    text = f"{why}, and I would only be guessing. " + (
        f"The nearest things it holds are: {nearest}." if nearest else "It holds nothing close to it."
    )
    return Generation(text=text, model=backend.model, backend=backend.name, done_reason="abstain")


def run(
    prep: Prepared,
    backend: Backend,
    *,
    settings: Settings,
    memory: MemoryStream | None,
    show_prompt: bool = False,
) -> Answer:
    """Generate in one call and finish."""
    opts = options(prep, backend)
    cleaner = Cleaner(n_sources=len(prep.hits), name=settings.self_model.name)
    t = time.perf_counter()
    gen = abstention(prep, backend) or extracted(prep, backend) or backend.generate(prep.messages, opts)
    ms = (time.perf_counter() - t) * 1000
    if gen.done_reason not in ("abstain", EXTRACTED):
        cleaner.feed(prep.preface)
    cleaner.feed(gen.text)
    cleaner.finish(gen.done_reason)
    return finish(
        prep,
        gen,
        cleaner,
        settings=settings,
        memory=memory,
        backend=backend,
        options=opts,
        generate_ms=ms,
        show_prompt=show_prompt,
    )


class AnswerStream:
    """Iterate for the cleaned answer text piece by piece; `answer` holds the final Answer once it is done."""

    def __init__(
        self,
        prep: Prepared,
        backend: Backend,
        *,
        settings: Settings,
        memory: MemoryStream | None,
        show_prompt: bool = False,
        on_done: Callable[[Answer], None] | None = None,
    ) -> None:
        self.prep = prep
        self.backend = backend
        self.settings = settings
        self.memory = memory
        self.show_prompt = show_prompt
        self.on_done = on_done
        self.answer: Answer | None = None
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._iter)

    def _run(self) -> Iterator[str]:
        opts = options(self.prep, self.backend)
        cleaner = Cleaner(n_sources=len(self.prep.hits), name=self.settings.self_model.name)
        t = time.perf_counter()
        gen = abstention(self.prep, self.backend) or extracted(self.prep, self.backend)
        chunks = (
            [Chunk(gen.text), Chunk("", done=True, generation=gen)]
            if gen
            else itertools.chain([Chunk(self.prep.preface)], self.backend.stream(self.prep.messages, opts))
        )
        for chunk in chunks:
            piece = cleaner.feed(chunk.text)
            if piece:
                yield piece
            if chunk.done:
                gen = chunk.generation
                break
        if gen is None:
            raise BackendError(f"the {self.backend.name} backend ended its stream without a final chunk")
        ms = (time.perf_counter() - t) * 1000
        rest = cleaner.finish(gen.done_reason)
        if rest:
            yield rest
        self.answer = finish(
            self.prep,
            gen,
            cleaner,
            settings=self.settings,
            memory=self.memory,
            backend=self.backend,
            options=opts,
            generate_ms=ms,
            show_prompt=self.show_prompt,
        )
        if self.on_done is not None:
            self.on_done(self.answer)

    def close(self) -> None:
        """Stop early (a client went away): the backend's stream is closed and nothing is remembered."""
        self._iter.close()

    def result(self) -> Answer:
        """Drain the stream (if not yet done) and return the final Answer."""
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer
