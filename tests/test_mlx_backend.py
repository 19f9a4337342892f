"""The MLX backend with the real bundled SmolLM2-135M-Instruct: logits against an independent transformers model,
generation (greedy, streaming, batches, copy mixing), the tokenizer and chat template, and its errors."""

from __future__ import annotations

import importlib.metadata
import struct
from pathlib import Path

import numpy as np
import pytest

from rag.backends.base import BackendError, GenerationOptions
from rag.backends.gguf import INSTALL_HINT, bundled_model_path
from rag.backends.mlx import MLXBackend, load_mlx_backend, mlx_status

try:
    from tests.llama_reference import torch_llama
except ImportError:  # tests/ is not a package when pytest runs with rootdir-relative imports
    from llama_reference import torch_llama

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
SHORT = GenerationOptions(max_tokens=24, temperature=0.0)
TEXTS = [
    "Hello world",
    "Café naïve résumé, Ærøskøbing",
    "東京は日本の首都です。北京欢迎你",
    "I ❤️ 🐍 and 🤖! 👩‍👩‍👧",
    "def f(x):\n    return x**2  # square\n\n\n",
    "a  b   c\t\td \n\n  e      ",
    "year 2026: 3.14159",
]


@pytest.fixture(scope="module")
def backend() -> MLXBackend:
    return load_mlx_backend()


@pytest.fixture(scope="module")
def hf_tokenizer():
    """transformers' own reading of the same GGUF tokenizer (needs the `gguf` package)."""
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    path = bundled_model_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_loads_the_bundled_model_once(backend):
    assert backend.model == "SmolLM2-135M-Instruct"
    assert backend.context_tokens == 8192
    assert backend.loaded.dtype == "float32"  # CPU: dequantized
    assert load_mlx_backend().loaded is backend.loaded  # cached per (path, dtype)
    assert mlx_status()[0]


def test_logits_match_an_independent_transformers_model(backend):
    """Our float32 MLX model vs transformers' LlamaForCausalLM built from the raw GGUF tensors."""
    import mlx.core as mx
    import torch

    ref = torch_llama(bundled_model_path())
    ids = backend.tokenizer.chat_ids(FRANCE)
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits[0].numpy()
    got = np.array(backend.loaded.model(mx.array([ids]))[0].astype(mx.float32))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 2e-3 * np.abs(expected).max()  # float32 both: op order only
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_greedy_answer_names_paris_with_probabilities(backend):
    g = backend.generate(FRANCE, SHORT)
    assert "Paris" in g.text
    assert g.done_reason == "stop" and g.backend == "mlx" and g.model == "SmolLM2-135M-Instruct"
    assert len(g.probs) == len(g.entropies) == len(backend.tokenizer.encode(g.text))
    assert all(0.0 < p <= 1.0 for p in g.probs) and all(e >= 0.0 for e in g.entropies)


def test_streaming_equals_generate_and_max_tokens_ends_with_length(backend):
    story = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    options = GenerationOptions(max_tokens=8, temperature=0.0)
    chunks = list(backend.stream(story, options))
    assert chunks[-1].done and chunks[-1].generation is not None
    streamed = "".join(c.text for c in chunks)
    g = backend.generate(story, options)
    assert streamed == g.text == chunks[-1].generation.text
    assert g.done_reason == "length" and len(g.probs) == 8


def test_batch_of_three_equals_three_single_greedy_generations(backend):
    """generate_batch (mlx-lm's BatchGenerator) answers as the compiled decoder does for each row alone."""
    batch = [
        FRANCE,
        [{"role": "user", "content": "Name a colour."}],
        [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Say hello in French."}],
    ]
    together = backend.generate_batch(batch, SHORT)
    alone = [backend.generate(m, SHORT) for m in batch]
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.done_reason for g in together] == [g.done_reason for g in alone]
    for t, a in zip(together, alone, strict=True):
        assert np.allclose(t.probs, a.probs, atol=1e-3) and np.allclose(t.entropies, a.entropies, atol=1e-3)


def test_batch_limits_and_the_decoder_takes_one_prompt(backend):
    from mlx_lm.sample_utils import make_sampler

    from rag.backends.mlx import MAX_BATCH

    with pytest.raises(BackendError, match=f"at most {MAX_BATCH} conversations"):
        backend.generate_batch([FRANCE] * (MAX_BATCH + 1), SHORT)
    assert backend.generate_batch([], SHORT) == []
    prompt = backend.tokenizer.chat_ids(FRANCE)
    with pytest.raises(ValueError, match="one prompt at a time"):
        next(backend.loaded.decoder.decode([prompt, prompt], max_tokens=2, sampler=make_sampler(0.0), eos_ids=set()))


def test_repeat_penalty_goes_through_mlx_lm_processors_row_by_row(backend):
    """mlx-lm's repetition penalty (a logits processor) sees each row's own tokens: a batch with rows of different
    prompts, and a stop string, answers as each row alone; the penalty moves the probabilities."""
    batch = [FRANCE, [{"role": "user", "content": "Repeat after me: la la la la la la"}]]
    options = GenerationOptions(max_tokens=12, temperature=0.0, repeat_penalty=1.5, stop=["\n"])
    together = backend.generate_batch(batch, options)
    alone = [backend.generate(m, options) for m in batch]
    assert [(g.text, g.done_reason) for g in together] == [(g.text, g.done_reason) for g in alone]
    assert all("\n" not in g.text for g in together)
    assert np.allclose(together[1].probs, alone[1].probs, atol=1e-3)
    plain = backend.generate(batch[1], GenerationOptions(max_tokens=12, temperature=0.0, stop=["\n"]))
    assert len(plain.probs) == len(alone[1].probs) == 12  # the same words here, at other probabilities
    assert max(abs(x - y) for x, y in zip(plain.probs, alone[1].probs, strict=True)) > 0.02


def test_cached_decoding_across_attention_spans_equals_a_full_forward(backend):
    """The static cache, its compiled steps and the attention spans (128 positions each) change nothing: greedy
    tokens decoded across a span boundary and their probabilities equal one uncached forward over the text."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    from rag.backends.mlx_decode import ATTEND_STEP

    prompt = backend.tokenizer.chat_ids([{"role": "user", "content": "Tell me about rivers. " * 18}])
    assert ATTEND_STEP - 12 < len(prompt) < ATTEND_STEP  # the steps below cross from one span into the next
    decoder = backend.loaded.decoder
    steps = [s[0] for s in decoder.decode([prompt], max_tokens=24, sampler=make_sampler(0.0), eos_ids=set())]
    tokens = [s.token for s in steps]
    logits = backend.loaded.model(mx.array([prompt + tokens]))[0, len(prompt) - 1 : -1].astype(mx.float32)
    probs = np.array(mx.softmax(logits, axis=-1))
    assert (probs.argmax(-1) == tokens).all()
    assert np.allclose([s.prob for s in steps], probs[np.arange(len(tokens)), tokens], atol=2e-3)


def test_stop_strings_and_seeded_sampling(backend):
    g = backend.generate(FRANCE, GenerationOptions(max_tokens=24, temperature=0.0, stop=[" is"]))
    assert g.text == "The capital of France" and g.done_reason == "stop"
    hot = GenerationOptions(max_tokens=8, temperature=1.0, top_p=0.95, top_k=40, seed=11)
    assert backend.generate(FRANCE, hot).text == backend.generate(FRANCE, hot).text
    pair = [FRANCE, [{"role": "user", "content": "Name a colour."}]]
    assert [g.text for g in backend.generate_batch(pair, hot)] == [g.text for g in backend.generate_batch(pair, hot)]


def test_copy_mixing_reproduces_the_source_and_is_off_at_weight_zero(backend):
    question = [{"role": "user", "content": "Tell me about Atlantis."}]
    source = "Atlantis is a legendary island first described by Plato around 360 BC, sunk in a single day."
    copied = backend.generate(question, GenerationOptions(max_tokens=40, copy_weight=1.0, copy_sources=[source]))
    assert copied.text == source and copied.done_reason == "stop"
    plain = backend.generate(question, GenerationOptions(max_tokens=8))
    off = backend.generate(question, GenerationOptions(max_tokens=8, copy_weight=0.0, copy_sources=[source]))
    assert off.text == plain.text != source


def test_copy_mixing_in_a_batch_is_each_rows_own(backend):
    """In generate_batch the copy mixture is a per-row logits processor of mlx-lm's batch generator: what each row
    samples and what its probabilities and entropies report are its own mixture, as the row alone gives them."""
    source = "Atlantis is a legendary island first described by Plato around 360 BC, sunk in a single day."
    batch = [[{"role": "user", "content": q}] for q in ("Tell me about Atlantis.", "Who described Atlantis first?")]
    options = GenerationOptions(max_tokens=12, temperature=0.0, copy_weight=0.5, copy_sources=[source])
    together = backend.generate_batch(batch, options)
    alone = [backend.generate(m, options) for m in batch]
    plain = backend.generate_batch(batch, GenerationOptions(max_tokens=12, temperature=0.0))
    for t, a, p in zip(together, alone, plain, strict=True):
        assert (t.text, t.done_reason) == (a.text, a.done_reason) and source.startswith(t.text) and t.text != p.text
        assert np.allclose(t.probs, a.probs, atol=1e-3) and np.allclose(t.entropies, a.entropies, atol=1e-3)
        assert min(t.probs) >= 0.5 - 1e-4 > min(p.probs)  # half the mass goes to the copied token


def test_count_tokens_counts_the_template(backend):
    n = backend.count_tokens(FRANCE)
    assert n == len(backend.tokenizer.chat_ids(FRANCE)) > len(backend.tokenizer.encode(FRANCE[0]["content"]))
    longer = FRANCE + [{"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Spain?"}]
    assert backend.count_tokens(longer) > n
    with pytest.raises(BackendError, match="8192-token context"):
        backend.generate(FRANCE, GenerationOptions(max_tokens=8190))


def test_tokenizer_round_trips_and_matches_transformers(backend, hf_tokenizer):
    tok = backend.tokenizer
    for text in TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert ids == hf_tokenizer.encode(text, add_special_tokens=False), text
    assert len(tok.encode("2026")) == 4  # SmolLM splits digits one by one


def test_special_tokens_and_chat_template(backend, hf_tokenizer):
    tok = backend.tokenizer
    vocab = tok.tokenizer.get_vocab()
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n", special=True)
    assert ids[0] == vocab["<|im_start|>"] == 1 and vocab["<|im_end|>"] in ids
    assert tok.decode(ids) == "user\nhi\n"
    assert vocab["<|im_end|>"] in tok.eos_ids
    rendered = tok.render(FRANCE)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    chat = [{"role": "system", "content": "Be brief."}, *FRANCE]
    assert tok.render(chat) == hf_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def test_an_mlx_lm_folder_answers_like_the_gguf(backend, tmp_path):
    """The same weights saved as an mlx-lm folder (safetensors, config.json, tokenizer.json) load through mlx-lm."""
    import dataclasses
    import json

    import mlx.core as mx
    from mlx.utils import tree_flatten

    from rag.backends.gguf import load_gguf

    g = load_gguf(bundled_model_path())  # quantized as stored
    mx.save_safetensors(str(tmp_path / "model.safetensors"), dict(tree_flatten(g.model.parameters())))
    quant = {"group_size": 32, "bits": 4, "model.embed_tokens": {"group_size": 32, "bits": 8}}
    config = {**dataclasses.asdict(g.model.args), "quantization": quant}
    (tmp_path / "config.json").write_text(json.dumps(config))
    g.tokenizer.tokenizer.save(str(tmp_path / "tokenizer.json"))
    tok_config = {"chat_template": g.tokenizer.template_source, "eos_token": "<|im_end|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok_config))
    folder = load_mlx_backend(str(tmp_path))
    assert folder.model == tmp_path.name and folder.context_tokens == 8192
    assert folder.generate(FRANCE, SHORT).text == backend.generate(FRANCE, SHORT).text


def test_missing_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(BackendError, match=INSTALL_HINT.replace(".", r"\.")):
        load_mlx_backend()
    assert mlx_status() == (False, f"the bundled SmolLM2-135M-Instruct is missing: {INSTALL_HINT}")


def _gguf_with_one_tensor(path: Path, name: str, type_id: int) -> Path:
    """A minimal GGUF v3 file: one string KV and one 256-element tensor of ``type_id`` (data zeroed)."""

    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()

    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    header += string("general.architecture") + struct.pack("<I", 8) + string("llama")
    header += string(name) + struct.pack("<I", 1) + struct.pack("<Q", 256) + struct.pack("<IQ", type_id, 0)
    header += b"\0" * (-len(header) % 32)
    path.write_bytes(header + b"\0" * 256)
    return path


def test_unsupported_tensor_type_is_named(tmp_path):
    path = _gguf_with_one_tensor(tmp_path / "q5k.gguf", "blk.0.attn_q.weight", 13)
    with pytest.raises(BackendError, match=r"'blk\.0\.attn_q\.weight' has type Q5_K"):
        load_mlx_backend(str(path))
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00")
    with pytest.raises(BackendError, match="truncated or corrupt GGUF header"):
        load_mlx_backend(str(tmp_path / "bad.gguf"))


def test_bad_model_arguments_are_clear(tmp_path):
    with pytest.raises(BackendError, match="no model at"):
        load_mlx_backend(str(tmp_path / "nowhere.gguf"))
    with pytest.raises(BackendError, match="not in the local Hugging Face cache"):
        load_mlx_backend("nobody/no-such-model-here")
    with pytest.raises(BackendError, match="dtype must be one of"):
        load_mlx_backend(dtype="int3")


# ---------------------------------------------------------------------------------------------------------
# The compact prompt style ([mlx] prompt_style = "compact") through the ask path


def test_compact_style_quotes_one_exemplar_and_none_off_corpus(make_assistant):
    """A small model reads one retrieved answer, quoted in the user message after the instructions (the system
    message is one plain line) and the only one it copies from; when the evidence is weak it reads none, so
    nothing drags it off topic, and the answer says the documents do not cover it."""
    from rag.consciousness.prompt import COMPACT_INSTRUCTIONS, COMPACT_SYSTEM

    mlx = {"max_tokens": 8, "prompt_style": "compact", "copy_weight": 0.3}
    compact = make_assistant(backend="mlx", mlx=mlx)
    full = make_assistant(backend="mlx", mlx={**mlx, "prompt_style": "full"})
    question = "How can I fall asleep faster?"
    a = compact.ask(question, use_memory=False, show_prompt=True)
    b = full.ask(question, use_memory=False, show_prompt=True)
    system, user = a.messages[0]["content"], a.messages[-1]["content"]
    assert a.messages[0]["role"] == "system" and system == COMPACT_SYSTEM
    assert len(system) < len(b.messages[0]["content"])
    assert user.count("<exemplar ") == 1 and len(a.sources) == 1 and len(b.sources) > 1
    assert a.sources[0].prompt in user and a.sources[0].prompt not in system
    assert a.sources[0].id == compact.search(question, 4)[0].id  # the best retrieved exemplar is the one kept
    assert user.startswith(COMPACT_INSTRUCTIONS + "\n\n<reference>")  # the fixed part first: prompts share it
    assert user.endswith("</reference>\n\nQuestion: " + question)
    off = compact.ask("Who painted the ceiling of the Sistine Chapel?", use_memory=False, show_prompt=True)
    assert off.low_confidence and not off.sources
    assert "<reference>" not in off.messages[-1]["content"]
    assert off.answer.startswith("I could not find this in your documents")


def test_unknown_prompt_style_is_a_clear_error(make_assistant):
    from rag.config import ConfigError

    a = make_assistant(backend="mlx", mlx={"max_tokens": 4, "prompt_style": "tiny"})
    with pytest.raises(ConfigError, match=r"\[mlx\] prompt_style must be one of full, compact"):
        a.ask("Why is the sky blue?", use_memory=False)
