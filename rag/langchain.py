"""LangChain interfaces: a retriever over our index, our prompt template, a backend as a chat Runnable, and
the whole ask path as a Runnable (invoke, stream, batch), for plain LCEL composition::

    retriever = ShvayambhuRetriever(assistant=a, k=4)
    chain = {"workspace": retriever | format_documents, "question": RunnablePassthrough()} \\
        | lcel_prompt(a.settings) | BackendChat(backend=a.backend()) | StrOutputParser()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, PrivateAttr

from blt.data import exemplar_block
from rag.backends.base import GenerationOptions
from rag.backends.select import select_backend
from rag.config import Settings
from rag.consciousness.prompt import INSTRUCTIONS, block, exemplar_text, reference_block
from rag.consciousness.selfmodel import SelfModel
from rag.consciousness.workspace import Candidate


class ShvayambhuRetriever(BaseRetriever):
    """Exemplars from the corpus collection as Documents: the response as page content; id, score (cosine
    similarity), prompt and the record's metadata in `metadata`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    assistant: Any
    k: int = 4
    min_score: float | None = None
    mmr: bool | None = None
    where: dict[str, Any] | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.assistant.search(query, self.k, where=self.where, mmr=self.mmr, min_score=self.min_score)
        docs = []
        for h in hits:
            meta = {k: v for k, v in h.metadata.items() if k not in ("response",)}
            meta.update({"id": h.id, "score": h.score, "prompt": h.prompt})
            docs.append(Document(id=h.id, page_content=h.response, metadata=meta))
        return docs


def format_documents(docs: list[Document]) -> str:
    """Documents as our quoted reference block of numbered exemplars ("" for none)."""
    blocks = [
        block(Candidate("exemplar", exemplar_text(str(d.metadata.get("prompt", "")), d.page_content), 0.0), i)
        for i, d in enumerate(docs, 1)
    ]
    return reference_block(blocks)


def chat_prompt() -> ChatPromptTemplate:
    """The ask prompt as a langchain-core template: variables self_model, instructions, guidance, workspace
    (the reference block, see `format_documents`) and question; `history` (messages) is optional."""
    return ChatPromptTemplate.from_messages(
        [
            ("system", "{self_model}\n\n{instructions}{guidance}"),
            MessagesPlaceholder("history", optional=True),
            ("human", "{workspace}{question}"),
        ]
    )


def lcel_prompt(settings: Settings | None = None) -> ChatPromptTemplate:
    """Our ask prompt with the self-model and instructions filled in; it takes `workspace` and `question`
    (and optionally `history`, a list of messages)."""
    sm = SelfModel.from_settings((settings or Settings()).self_model)
    return chat_prompt().partial(self_model=sm.render(), instructions=INSTRUCTIONS, guidance="")


def to_dicts(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """langchain messages -> backend chat messages."""
    role = {"system": "system", "human": "user", "ai": "assistant"}
    return [{"role": role.get(m.type, m.type), "content": str(m.content)} for m in messages]


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, PromptValue):
        return to_dicts(value.to_messages())
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, BaseMessage) for m in value):
        return to_dicts(value)
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise TypeError(f"BackendChat takes a prompt value, messages or a string, not {type(value).__name__}")


class BackendChat(Runnable[Any, str]):
    """A generation backend (Ollama, BLT) as a Runnable: prompt value or messages in, text out."""

    def __init__(self, backend: Any, options: Any = None) -> None:
        self.backend = backend
        self.options = options

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> str:  # noqa: A002
        return self.backend.generate(_messages(input), self.options).text

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[str]:  # noqa: A002
        for chunk in self.backend.stream(_messages(input), self.options):
            if chunk.text:
                yield chunk.text


class AskRunnable(Runnable[Any, Any]):
    """The whole ask path. Input: a question, or a dict with `question` and optional `session`, `history`,
    `k`. Output: the answer text (`stream` yields its pieces), or the Answer itself with `output="answer"`."""

    def __init__(self, assistant: Any, output: str = "text", **ask_options: Any) -> None:
        if output not in ("text", "answer"):
            raise ValueError("output must be 'text' or 'answer'")
        self.assistant = assistant
        self.output = output
        self.ask_options = ask_options

    def _args(self, value: Any) -> tuple[str, dict[str, Any]]:
        if isinstance(value, str):
            return value, dict(self.ask_options)
        if isinstance(value, dict) and "question" in value:
            extra = {k: value[k] for k in ("session", "history", "k", "use_memory", "use_retrieval") if k in value}
            return str(value["question"]), {**self.ask_options, **extra}
        raise TypeError("AskRunnable takes a question string or a dict with a 'question' key")

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        question, opts = self._args(input)
        answer = self.assistant.ask(question, **opts)
        return answer if self.output == "answer" else answer.answer

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:  # noqa: A002
        question, opts = self._args(input)
        s = self.assistant.stream(question, **opts)
        if self.output == "answer":
            yield s.result()
            return
        yield from s


def ask_runnable(assistant: Any, output: str = "text", **ask_options: Any) -> AskRunnable:
    """The ask path of `assistant` as a Runnable."""
    return AskRunnable(assistant, output=output, **ask_options)


def format_exemplars(docs: list[Document]) -> str:
    """Documents in the BLT's trained exemplar layout (most relevant last), escaped as in training so a
    stored record cannot forge another exemplar."""
    pairs = [(" ".join(str(d.metadata.get("prompt", "")).split()), d.page_content.strip()) for d in docs]
    return exemplar_block(pairs).decode("utf-8")


def blt_prompt() -> ChatPromptTemplate:
    """The BLT's prompt: the exemplar block (`context`) as the system message, then the question."""
    return ChatPromptTemplate.from_messages([("system", "{context}"), ("human", "{question}")])


class ShvayambhuChatModel(BaseChatModel):
    """Any of our backends as a LangChain chat model: `backend` is auto, ollama, mlx or blt, `model` what that
    backend takes (an Ollama model, an MLX model path or repo id, a BLT checkpoint). Sampling defaults come from
    `settings` (the backend's section); the fields below override them when set. For the BLT, system messages
    are its exemplar block (see `format_exemplars` and `blt_prompt()`)."""

    backend: str = "auto"
    model: str | None = None
    settings: Settings | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None  # tokens (Ollama, MLX) or bytes (BLT)
    _backend_cache: Any = PrivateAttr(default=None)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return f"shvayambhu-{self.backend}"

    def _backend(self) -> Any:
        if self._backend_cache is None:
            self._backend_cache = select_backend(self.settings or Settings(), self.backend, self.model)
        return self._backend_cache

    def _options(self, stop: list[str] | None) -> GenerationOptions:
        opts = dataclasses.replace(self._backend().profile.options)  # the backend's settings section's
        for name in ("temperature", "top_k", "top_p", "seed", "max_tokens"):
            if getattr(self, name) is not None:
                setattr(opts, name, getattr(self, name))
        opts.stop = stop
        return opts

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        gen = self._backend().generate(to_dicts(messages), self._options(stop))
        meta = {"model": gen.model, "done_reason": gen.done_reason, "timings": gen.timings}
        message = AIMessage(content=gen.text, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=message, generation_info={"probs": gen.probs})])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._backend().stream(to_dicts(messages), self._options(stop)):
            if chunk.text:
                piece = ChatGenerationChunk(message=AIMessageChunk(content=chunk.text))
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=piece)
                yield piece
