"""The MLX backend's prompt cache (rag.backends.prompt_cache) with the real SmolLM2-135M-Instruct: prompts that
share a prefix with earlier ones give the same greedy tokens as the plain prefill, reuse what they share, and
the cache keeps within its budget; the server's warm-up leaves the fixed head of every prompt cached."""

from __future__ import annotations

import anyio
import mlx.core as mx
import pytest
from mlx_lm.sample_utils import make_sampler

from rag.backends.base import GenerationOptions
from rag.backends.mlx import load_mlx_backend
from rag.backends.mlx_decode import StaticKVCache
from rag.backends.prompt_cache import CHUNK, PromptCache, common_prefix

SYSTEM = {"role": "system", "content": "You are a helpful AI assistant."}
PASSAGE = (
    "<reference>\nQ: Why is the sky blue during the day?\nA: Sunlight holds every visible colour. Air molecules, far "
    "smaller than its wavelength, scatter it (Rayleigh scattering), blue several times more than red, so blue "
    "reaches the eye from every direction.\n</reference>\n\nAnswer in one sentence from the reference.\n\nQuestion: "
)


def chat(question: str, passage: str = PASSAGE) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": passage + question}]


@pytest.fixture(scope="module")
def backend():
    return load_mlx_backend()


def greedy(decoder, prompt: list[int], eos: set[int], n: int = 8) -> list[int]:
    out = []
    for step in decoder.decode([prompt], max_tokens=n, sampler=make_sampler(0.0), eos_ids=eos):
        if step[0] is None:
            break
        out.append(step[0].token)
    return out


def test_cached_prefill_gives_the_tokens_of_the_plain_one(backend):
    tok, decoder = backend.tokenizer, backend.loaded.decoder
    filler = "Sunlight reaches the ground after scattering. " * (CHUNK // 7)  # ~8 tokens each: over one chunk
    long_passage = PASSAGE.replace("Answer", filler + "Answer")
    prompts = [
        tok.chat_ids(chat("Why is the sky blue?")),
        tok.chat_ids(chat("What does Rayleigh scattering do?")),  # the same passage: all but the question shared
        tok.chat_ids(chat("Why is the sky blue?")),  # asked again: all but the last token shared
        tok.chat_ids([SYSTEM, {"role": "user", "content": "How do I bake bread?"}]),  # the head only
        tok.chat_ids(chat("Why is the sky blue?", long_passage)),  # several chunks
    ]
    assert len(prompts[-1]) > CHUNK
    cache = decoder.prompt_cache
    try:
        decoder.prompt_cache = None
        plain = [greedy(decoder, p, tok.eos_ids) for p in prompts]
        decoder.prompt_cache = fresh = PromptCache()
        reused = []
        for p in prompts:
            before = fresh.hits
            cached = greedy(decoder, p, tok.eos_ids)
            reused.append(fresh.hits - before)
            assert cached == plain[len(reused) - 1], tok.decode(p)
    finally:
        decoder.prompt_cache = cache
    shared = common_prefix(prompts[0], prompts[1])
    assert reused[0] == 0 and reused[1] == shared > len(prompts[1]) - 20
    assert reused[2] == len(prompts[2]) - 1
    assert 10 < reused[3] == common_prefix(prompts[3], prompts[0]) < 30  # system prompt and template head
    assert fresh.computed == sum(len(p) for p in prompts) - sum(reused)


def test_next_token_log_probs_match_the_plain_prefill(backend):
    decoder = backend.loaded.decoder
    prompt = backend.tokenizer.chat_ids(chat("Why is the sky blue?"))
    cache = PromptCache()
    plain = Decoder_prefill(decoder, prompt)
    first = cache.prefill(decoder.model, prompt, 512)[0]
    again = cache.prefill(decoder.model, prompt, 512)[0]
    assert cache.hits == len(prompt) - 1
    for lp in (first, again):
        assert lp.shape == plain.shape
        assert mx.abs(lp - plain).max().item() < 1e-3


def Decoder_prefill(decoder, prompt: list[int]) -> mx.array:  # noqa: N802 - the plain path, cache switched off
    cache, decoder.prompt_cache = decoder.prompt_cache, None
    try:
        return decoder.prefill([prompt], 512)[0]
    finally:
        decoder.prompt_cache = cache


def test_streamed_answers_are_the_same_with_the_cache(backend):
    opts = GenerationOptions(max_tokens=12, temperature=0.0)
    messages = chat("Why is the sky blue?")
    decoder = backend.loaded.decoder
    cache, decoder.prompt_cache = decoder.prompt_cache, None
    try:
        plain = backend.generate(messages, opts).text
    finally:
        decoder.prompt_cache = cache
    assert backend.generate(messages, opts).text == plain
    assert backend.generate(messages, opts).text == plain  # now from the cache
    assert plain.strip()


def fake_caches(n: int, layers: int = 2, value: float = 1.0) -> list[StaticKVCache]:
    zero = mx.array(0, dtype=mx.int32)
    k = mx.full((1, 3, 64, 8), value)
    return [StaticKVCache(64, zero, mx.array([0]), k, k * 2) for _ in range(layers)]


def test_budget_lru_and_superseded_entries():
    per_token = 2 * 2 * 3 * 8 * 4  # layers x (keys, values) x heads x head dim x float32
    cache = PromptCache(max_bytes=25 * per_token)
    cache.store([1, 2, 3, 4, 5], fake_caches(5))
    cache.store([1, 2, 3, 4, 5, 6, 7, 8], fake_caches(8))  # extends the first: replaces it
    assert len(cache._entries) == 1 and cache.nbytes == 8 * per_token
    cache.store([1, 2, 3], fake_caches(3))  # already held by the longer entry: nothing new
    assert len(cache._entries) == 1
    cache.store([9] * 10, fake_caches(10, value=3.0))
    assert cache.lookup([9] * 10 + [4])[0] == 10
    n, entry = cache.lookup([1, 2, 3, 4, 5, 6, 7, 8])
    assert n == 7 and entry is not None  # never the whole prompt: its last token's logits are needed
    assert entry.keys[0].shape == (1, 3, 8, 64 // 8) and entry.values[0][0, 0, 0, 0].item() == 2.0
    cache.store([7] * 10, fake_caches(10))  # over budget: the least recently used ([9] * 10) goes
    assert cache.lookup([9] * 10 + [4]) == (0, None)
    assert cache.lookup([1, 2, 3, 0])[0] == 3 and cache.nbytes <= cache.max_bytes
    PromptCache(max_bytes=per_token).store([1, 2], fake_caches(2))  # larger than the whole budget: not kept


def test_server_warm_up_caches_the_head_of_every_prompt(make_assistant):
    from rag.serve.generation import Engine
    from rag.serve.queue import ModelQueue
    from rag.serve.warmup import warm

    assistant = make_assistant(backend="mlx", mlx={"max_tokens": 16})
    backend = assistant.backend()
    cache = backend.loaded.decoder.prompt_cache
    cache.clear()
    engine = Engine(assistant, ModelQueue(4, 1))
    anyio.run(warm, engine)
    assert engine.warm and cache.nbytes > 0
    prep = assistant.prepare("How can I fall asleep faster?", backend=backend, use_memory=False)
    reuse, _ = cache.lookup(backend.tokenizer.chat_ids(prep.messages))
    assert reuse > 10  # at least the system prompt and the template head


def test_the_head_read_ahead_holds_the_instructions(make_assistant):
    """`keep_head` (the server's warm-up) reads the system line and the compact
    instructions before any question; a question answered from a passage then reuses all of them."""
    from rag.consciousness.prompt import COMPACT_INSTRUCTIONS, keep_head

    assistant = make_assistant(backend="mlx", mlx={"max_tokens": 16})
    backend = assistant.backend()
    cache = backend.loaded.decoder.prompt_cache
    cache.clear()
    prep = assistant.prepare("How can I fall asleep faster?", backend=backend, use_memory=False)
    ids = backend.tokenizer.chat_ids(prep.messages)
    assert "<reference>" in prep.messages[-1]["content"] and cache.lookup(ids) == (0, None)
    keep_head(backend.profile)
    reuse, _ = cache.lookup(ids)
    assert reuse > backend.text_tokens(COMPACT_INSTRUCTIONS) + 10  # the instructions and the template head


def test_a_later_process_reads_the_head_from_disk(backend, tmp_path, monkeypatch):
    """`keep_prompt` saves the head's keys and values (rag.backends.head_cache); with the in-memory cache emptied, as
    in a new process, it reads them back instead of computing them, and answers are the plain prefill's."""
    from rag.backends import head_cache

    monkeypatch.setattr(head_cache, "cache_dir", lambda: tmp_path)
    tok, decoder = backend.tokenizer, backend.loaded.decoder
    head = [SYSTEM, {"role": "user", "content": PASSAGE}]
    ids = tok.chat_ids(head)
    cache = decoder.prompt_cache
    cache.clear()
    before = cache.computed
    backend.keep_prompt(head)
    assert cache.computed - before == len(ids) and len(list(tmp_path.glob("head-*.safetensors"))) == 1
    cache.clear()  # a new process: nothing in memory
    before = cache.computed
    backend.keep_prompt(head)
    assert cache.computed == before and cache.held(ids) is not None  # read, not computed
    prompt = tok.chat_ids(chat("Why is the sky blue?"))
    assert cache.lookup(prompt)[0] == common_prefix(ids, prompt) > 80  # the passage and instructions: from disk
    with_disk = greedy(decoder, prompt, tok.eos_ids)
    decoder.prompt_cache = None
    try:
        assert with_disk == greedy(decoder, prompt, tok.eos_ids)
    finally:
        decoder.prompt_cache = cache


def test_a_damaged_or_foreign_head_file_is_not_used(backend, tmp_path, monkeypatch):
    from rag.backends import head_cache

    monkeypatch.setattr(head_cache, "cache_dir", lambda: tmp_path)
    tok, cache = backend.tokenizer, backend.loaded.decoder.prompt_cache
    head = [SYSTEM, {"role": "user", "content": PASSAGE}]
    ids = tok.chat_ids(head)
    path = head_cache.head_path(backend.loaded.key, ids)
    path.write_bytes(b"not safetensors")
    cache.clear()
    before = cache.computed
    backend.keep_prompt(head)  # damaged: computed, and written again
    assert cache.computed - before == len(ids) and head_cache.load_head(path, ids) is not None
    assert head_cache.load_head(path, ids[:-1]) is None and not path.exists()  # another head's tokens: removed


def test_at_most_max_files_heads_are_kept(tmp_path, monkeypatch):
    from rag.backends import head_cache

    monkeypatch.setattr(head_cache, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(head_cache, "MAX_FILES", 2)
    kv = [mx.zeros((1, 1, 3, 2))]
    for n in range(4):
        tokens = [n, n, n]
        head_cache.save_head(head_cache.head_path("m", tokens), tokens, kv, kv)
    assert len(list(tmp_path.glob("head-*.safetensors"))) == 2
    assert head_cache.load_head(head_cache.head_path("m", [3, 3, 3]), [3, 3, 3]) is not None  # the newest stay
