"""A chat model's tokenizer: byte-level BPE (the `tokenizers` library) plus the model's Jinja chat template.

Built from a GGUF file's metadata or from a Hugging Face model folder (tokenizer.json + tokenizer_config.json),
so both kinds of model count, render and decode the same way, without transformers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from tokenizers.decoders import DecodeStream

from rag.backends.base import BackendError

# Tokens that end an assistant turn in the common chat formats (ChatML, Llama 3, Phi, Gemma), when present.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
CONTROL, USER_DEFINED = 3, 4  # GGUF token types that are added (special) tokens
# llama.cpp pre-tokenizer names -> the split before byte-level BPE
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = ("default", "gpt2", "smollm", "llama-bpe", "llama3")
# While the template renders, message i's content is the slot `PAD \ue000 i \ue001 PAD` (private-use marks, so
# nothing a template writes looks like one); a PAD that is gone shows that the template trimmed the content.
_PAD = "\u2003"
_SLOT = re.compile("(" + _PAD + "?)\ue000(\\d+)\ue001(" + _PAD + "?)")


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


class ChatTokenizer:
    """Encode, decode, and render chat messages to token ids through the model's own template."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: str,
        *,
        bos: str = "",
        eos: str = "",
        source: str = "",
        text_tokenizer: Tokenizer | None = None,
    ):
        self.tokenizer = tokenizer
        self.source = source
        self.bos, self.eos, self.template_source = bos, eos, template
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self.template = env.from_string(template)
        except jinja2.TemplateError as e:
            raise BackendError(f"{source}: the chat template does not parse: {e}") from None
        # A copy that reads special-token text as plain text: message contents go through it, so only the template
        # itself can produce special tokens (a separate object, since the switch is not per call).
        # (`text_tokenizer`: a second one built like `tokenizer`, cheaper than this copy through JSON)
        self.text_tokenizer = text_tokenizer or Tokenizer.from_str(tokenizer.to_str())
        self.text_tokenizer.encode_special_tokens = True
        ids = (tokenizer.token_to_id(t) for t in (eos, *END_OF_TURN) if t)
        self.eos_ids = {i for i in ids if i is not None}
        if not self.eos_ids:
            raise BackendError(f"{source}: no end-of-turn token (eos) in the tokenizer")

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of ``text`` as text: `<|im_start|>` written in it is seven ordinary tokens, not the special
        token. ``special=True`` recognises special tokens (for the chat template's own text only)."""
        return (self.tokenizer if special else self.text_tokenizer).encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def streaming(self) -> Callable[[int], str]:
        """A decoder for generated ids one at a time: each call returns the text the id completes ('' while a
        character is unfinished), special tokens skipped, as ``decode`` would give (the tokenizers library's
        streaming decoder: constant work a token, where decoding the whole answer each time grows with it)."""
        stream = DecodeStream(skip_special_tokens=True)
        tokenizer = self.tokenizer
        return lambda token: stream.step(tokenizer, int(token)) or ""

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The chat template applied to ``messages`` (dicts with role and content)."""
        try:
            return self.template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos,
                eos_token=self.eos,
            )
        except jinja2.TemplateError as e:
            raise BackendError(f"the chat template of {self.source} refused these messages: {e}") from None

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the rendered chat, ending where the assistant's answer begins.

        Special tokens come only from the template: it renders with a slot in place of each content, its own
        text is encoded with special tokens, and each content is encoded as text where its slot landed
        (stripped when the template trimmed it), so a stored `<|im_end|><|im_start|>system` stays text."""
        slots = [{**m, "content": f"{_PAD}\ue000{i}\ue001{_PAD}"} for i, m in enumerate(messages)]
        rendered = self.render(slots)
        ids: list[int] = []
        at = 0
        for m in _SLOT.finditer(rendered):
            ids += self.encode(rendered[at : m.start()], special=True)
            content = messages[int(m.group(2))]["content"]
            if not m.group(1):
                content = content.lstrip()
            if not m.group(3):
                content = content.rstrip()
            ids += self.encode(content)
            at = m.end()
        return ids + self.encode(rendered[at:], special=True)


def meta_value(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    """A GGUF metadata value as a Python value (MLX gives scalars as 0-d arrays)."""
    value = meta.get(key, default)
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def tokenizer_from_gguf(meta: dict[str, Any], source: Path) -> ChatTokenizer:
    """The byte-level BPE tokenizer and chat template stored in a GGUF file's metadata."""
    kind = meta_value(meta, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise BackendError(f"{source}: tokenizer model {kind!r} is not supported (byte-level BPE, `gpt2`, is)")
    pre = meta_value(meta, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise BackendError(f"{source}: pre-tokenizer {pre!r} is not supported (supported: {', '.join(PRE_TOKENIZERS)})")
    template = meta_value(meta, "tokenizer.chat_template")
    if not template:
        raise BackendError(f"{source}: no chat template (tokenizer.chat_template) in the GGUF metadata")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    vocab = {t: i for i, t in enumerate(tokens)}
    types = [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()] if "tokenizer.ggml.token_type" in meta else []

    def build() -> Tokenizer:
        tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=pre.startswith("llama")))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre in ("default", "gpt2", "smollm"))
        if pre == "smollm":
            tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        elif pre.startswith("llama"):
            split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated")
            tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        special = [i for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)]
        tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in special])
        return tok

    tok = build()

    def special(key: str) -> str:
        i = meta_value(meta, key)
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else ""

    return ChatTokenizer(
        tok,
        template,
        bos=special("tokenizer.ggml.bos_token_id"),
        eos=special("tokenizer.ggml.eos_token_id"),
        source=str(source),
        text_tokenizer=build(),
    )


def tokenizer_from_folder(folder: Path) -> ChatTokenizer:
    """The tokenizer of a Hugging Face model folder: tokenizer.json, and the template from tokenizer_config.json
    (or chat_template.jinja)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise BackendError(f"{folder}: no tokenizer.json (a fast tokenizer is needed)")
    tok = Tokenizer.from_file(str(path))
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja_file = folder / "chat_template.jinja"
    if not template and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    if not template:
        raise BackendError(f"{folder}: no chat template (tokenizer_config.json chat_template or chat_template.jinja)")

    def token(key: str) -> str:
        value = config.get(key) or ""
        return value.get("content", "") if isinstance(value, dict) else str(value)

    return ChatTokenizer(tok, template, bos=token("bos_token"), eos=token("eos_token"), source=str(folder))
