"""Every request body the server takes, as Pydantic models: FastAPI validates them, and a field of the wrong
type or out of its range is a 400 that names the field, in the route's protocol's error shape.

Numbers, booleans and strings are strict (no "1" for 1, no true for 1); strings must be valid Unicode (a lone
surrogate such as "\\ud800" is refused here, not found later by an encoder). Unknown fields are ignored, as
OpenAI and Ollama clients send many that a local assistant has no use for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator
from pydantic_core import PydanticCustomError


def unicode_text(s: str) -> str:
    """`s` when it encodes as UTF-8; a lone surrogate is a validation error naming its position."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError(
            "unicode", "not valid Unicode: a lone surrogate at character {at}", {"at": e.start}
        ) from None
    return s


Str = Annotated[str, Strict(), AfterValidator(unicode_text)]
Bool = Annotated[bool, Strict()]
MAX_STOPS = 8


def _floats(low: float, high: float) -> Any:
    return Annotated[float, Strict(), Field(ge=low, le=high, allow_inf_nan=False)]


def _ints(low: int, high: int) -> Any:
    return Annotated[int, Strict(), Field(ge=low, le=high)]


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# The sampling options a request may set, with their ranges (GenerationOptions' names).
Temperature = _floats(0.0, 2.0)
TopP = _floats(0.0, 1.0)
TopK = _ints(1, 1000)
RepeatPenalty = _floats(0.0, 10.0)
Seed = _ints(0, 2**32 - 1)
MaxTokens = _ints(1, 32768)
NumCtx = _ints(1, 1 << 20)
NumPredict = _ints(-2, 32768)  # Ollama's -1: no limit, -2: fill the context
SearchK = _ints(1, 1000)  # the server's max_k bounds it further
Score = _floats(-1.0, 1.0)
Stops = Annotated[list[Str], BeforeValidator(_listed), Field(max_length=MAX_STOPS)]
Texts = Annotated[list[Str], BeforeValidator(_listed), Field(min_length=1)]


class Body(BaseModel):
    """A request body: unknown fields ignored, known ones checked."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)


def content_text(content: Any) -> str:
    """A message's text: a string, or OpenAI's list of parts (text parts joined); anything else is refused."""
    if content is None:
        return ""
    if isinstance(content, str):
        return unicode_text(content)
    if isinstance(content, list):
        parts = []
        for i, p in enumerate(content):
            text = p.get("text") if isinstance(p, dict) and p.get("type") == "text" else p
            if not isinstance(text, str):
                raise PydanticCustomError("text_parts", "part {i}: only text parts are understood", {"i": i})
            parts.append(unicode_text(text))
        return "\n".join(parts)
    raise PydanticCustomError("content", "a string or a list of text parts")


class Message(Body):
    """One chat turn: a role and its text (OpenAI's text parts are joined)."""

    role: Str
    content: Annotated[str, BeforeValidator(content_text)] = ""


def _ends_with_user(messages: list[Message]) -> list[Message]:
    if messages and messages[-1].role != "user":
        raise PydanticCustomError("last_turn", "the last message must be the user's question")
    return messages


class StreamOptions(Body):
    include_usage: Bool | None = None


class ChatCompletionRequest(Body):
    """OpenAI's /v1/chat/completions."""

    model: Str | None = None
    messages: Annotated[list[Message], Field(min_length=1), AfterValidator(_ends_with_user)]
    stream: Bool | None = None
    stream_options: StreamOptions | None = None
    user: Str | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    stop: Stops | None = None

    def sampling(self) -> dict[str, Any]:
        """This request's sampling options as GenerationOptions fields (unset ones left out)."""
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        values = {"max_tokens": limit, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        out = {k: v for k, v in values.items() if v is not None}
        if self.stop is not None:
            out["stop"] = [s for s in self.stop if s] or None
        return out


class EmbeddingsRequest(Body):
    """OpenAI's /v1/embeddings (texts only, not token ids)."""

    model: Str | None = None
    input: Texts
    encoding_format: Literal["float", "base64"] | None = None


class OllamaOptions(Body):
    """Ollama's `options` that a Shvayambhu answer can use; the others are ignored."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    repeat_penalty: RepeatPenalty | None = None
    seed: Seed | None = None
    num_predict: NumPredict | None = None
    num_ctx: NumCtx | None = None
    stop: Stops | None = None

    def sampling(self) -> dict[str, Any]:
        """As GenerationOptions fields: num_predict is max_tokens (Ollama's negative values mean no limit)."""
        out = self.model_dump(exclude_none=True, exclude={"num_predict", "stop"})
        if self.num_predict is not None and self.num_predict > 0:
            out["max_tokens"] = self.num_predict
        if self.stop is not None:
            out["stop"] = [s for s in self.stop if s] or None
        return out

    @field_validator("num_predict")
    @classmethod
    def _some_answer(cls, n: int | None) -> int | None:
        if n == 0:
            raise PydanticCustomError("num_predict", "0 asks for no answer: give -1 (no limit) or 1 or more")
        return n


class OllamaChatRequest(Body):
    """Ollama's /api/chat; no messages is a load request."""

    model: Str | None = None
    messages: Annotated[list[Message], AfterValidator(_ends_with_user)] = []
    stream: Bool | None = None
    options: OllamaOptions | None = None


class OllamaGenerateRequest(Body):
    """Ollama's /api/generate; no prompt is a load request."""

    model: Str | None = None
    prompt: Str = ""
    stream: Bool | None = None
    options: OllamaOptions | None = None


class OllamaEmbedRequest(Body):
    model: Str | None = None
    input: Texts


class OllamaShowRequest(Body):
    model: Str | None = None
    name: Str | None = None


def plain_filter(where: dict[str, Any]) -> dict[str, Any]:
    """Equality filters only: plain field names (no Chroma `$` operators) with scalar values."""
    for key, value in where.items():
        if not key or key.startswith("$") or not isinstance(value, str | int | float | bool):
            raise PydanticCustomError(
                "where", 'an object of metadata field -> string/number/bool, e.g. {{"category": "science"}}'
            )
        if isinstance(value, str):
            unicode_text(value)
    return where


class SearchRequest(Body):
    """Our /v1/search: hits as `search --json` prints them."""

    query: Annotated[Str, Field(min_length=1)]
    k: SearchK = 4
    where: Annotated[dict[Str, Any], AfterValidator(plain_filter)] | None = None
    mode: Literal["dense", "hybrid", "lexical"] | None = None
    mmr: Bool | None = None
    min_score: Score | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise PydanticCustomError("blank", "give a non-empty string")
        return query


class Turn(Body):
    """One earlier turn of a conversation the CLI carries."""

    role: Literal["user", "assistant"]
    content: Str


class BackendRequest(Body):
    """Our /v1/backend: which backend (and model) would answer."""

    backend: Literal["auto", "ollama", "mlx", "blt"] | None = None
    model: Annotated[Str, Field(min_length=1)] | None = None


class AskRequest(BackendRequest):
    """Our /v1/ask: what `Shvayambhu.stream` takes (the CLI's `ask` and `chat` through a running server)."""

    question: Str
    k: SearchK | None = None
    session: Str | None = None
    use_memory: Bool = True
    use_retrieval: Bool = True
    show_prompt: Bool = False
    history: Annotated[list[Turn], Field(max_length=64)] = []
