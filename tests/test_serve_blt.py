"""`shvayambhu:blt` through the server: the real shipped BLT (MLX), two streamed clients at once,
served one after the other (MLX is not thread-safe: the model queue must serialise them)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from rag.backends.blt import DEFAULT_CHECKPOINT
from rag.serve import ServeOptions, start_in_thread
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="the shipped checkpoint is built by make")


class Counting:
    """Wraps a backend's stream to record how many generations run at the same time; the first one is held
    at its start until `release` is set, so that the test can make another request arrive meanwhile."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.active = 0
        self.most = 0
        self.started = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.original = backend.stream

    def stream(self, messages, options):
        with self.lock:
            self.active += 1
            self.started += 1
            self.most = max(self.most, self.active)
            first = self.started == 1
        try:
            if first:
                self.release.wait(60)
            yield from self.original(messages, options)
        finally:
            with self.lock:
                self.active -= 1


def test_blt_answers_through_the_server_one_generation_at_a_time(make_assistant):
    assistant = make_assistant(blt={"max_bytes": 24, "seed": 3})
    counting = Counting(assistant.backend("blt"))
    counting.backend.stream = counting.stream
    msgs = [{"role": "user", "content": "How can I fall asleep faster at night?"}]
    with start_in_thread(assistant, ServeOptions()) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
        engine_queue = running.app.state.engine.queue

        def streamed(i: int) -> tuple[str, dict]:
            chunks = list(
                client.chat.completions.create(model="shvayambhu:blt", messages=msgs, user=f"blt-{i}", stream=True)
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return text, chunks[-1].model_extra["shvayambhu"]

        with ThreadPoolExecutor(2) as pool:
            try:
                first = pool.submit(streamed, 0)
                wait_for(lambda: counting.active == 1, "the first generation to start")
                second = pool.submit(streamed, 1)
                wait_for(
                    lambda: sum(q["waiting"] for q in engine_queue.snapshot().values()) == 1,
                    "the second request to wait while the first generates",
                )
            finally:
                counting.release.set()
            answers = [first.result(timeout=120), second.result(timeout=120)]
    for text, evidence in answers:
        assert text.strip() and evidence["backend"] == "blt" and evidence["sources"]
    assert counting.started == 2 and counting.most == 1  # the two clients' generations never overlapped
