"""`shvayambhu:blt` through the server: the real shipped BLT (MLX), streamed and not, and two clients at once
served one after the other (MLX is not thread-safe: the model queue must serialise them)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from rag.backends.blt import DEFAULT_CHECKPOINT
from rag.serve import ServeOptions, start_in_thread

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="the shipped checkpoint is built by make")


class Counting:
    """Wraps a backend's stream to record how many generations run at the same time."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.active = 0
        self.most = 0
        self.lock = threading.Lock()
        self.original = backend.stream

    def stream(self, messages, options):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            yield from self.original(messages, options)
        finally:
            with self.lock:
                self.active -= 1


def test_blt_answers_through_the_server_one_generation_at_a_time(make_assistant):
    assistant = make_assistant(blt={"max_bytes": 48, "seed": 3})
    counting = Counting(assistant.backend("blt"))
    counting.backend.stream = counting.stream
    with start_in_thread(assistant, ServeOptions()) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
        msgs = [{"role": "user", "content": "How can I fall asleep faster at night?"}]
        whole = client.chat.completions.create(model="shvayambhu:blt", messages=msgs, user="blt-a")
        ev = whole.model_extra["shvayambhu"]
        assert whole.choices[0].message.content.strip() and ev["backend"] == "blt" and ev["sources"]

        def streamed(i: int) -> str:
            chunks = client.chat.completions.create(model="shvayambhu:blt", messages=msgs, user=f"blt-{i}", stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        with ThreadPoolExecutor(2) as pool:
            texts = list(pool.map(streamed, range(2)))
    assert all(t.strip() for t in texts)
    assert counting.most == 1  # the two clients' generations never overlapped
