"""NumPy's exp for the prefill's SwiGLU and attention softmax on a CPU (rag.backends.cpu_kernels): the same
results as mlx-lm's own functions for every mask form a llama model passes, only inside the block and only on
evaluated float32 arrays (a compiled function traced inside it still gets MLX's)."""

from __future__ import annotations

import threading

import mlx.core as mx
import mlx_lm.models.llama as llama
import numpy as np
import pytest

from rag.backends import cpu_kernels
from rag.backends.cpu_kernels import numpy_kernels
from rag.backends.mlx_decode import StaticKVCache

pytestmark = pytest.mark.skipif(mx.default_device() != mx.cpu, reason="the NumPy kernels are for the CPU device")


def arrays(n: int, s: int, heads: int = 6, kv: int = 2, d: int = 16, seed: int = 0):
    mx.random.seed(seed)
    q = mx.random.normal((1, heads, n, d))
    k = mx.random.normal((1, kv, s, d))
    v = mx.random.normal((1, kv, s, d))
    return q, k, v


def original(q, k, v, mask):
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)


def test_attention_matches_mlx_for_every_mask_form():
    q, k, v = arrays(5, 9)
    cache = StaticKVCache(16, mx.array(4, dtype=mx.int32), mx.array([1], dtype=mx.int32), span=9)
    bool_mask = cache.make_mask(5)  # causal, the first (padding) position hidden, as the prompt cache makes it
    additive = mx.where(bool_mask, 0.0, -1e9)
    causal = mx.arange(9)[None, :] <= (4 + mx.arange(5))[:, None]
    cases = [(bool_mask, bool_mask), (additive, additive), ("causal", causal), (None, None)]
    with numpy_kernels():
        for mask, reference in cases:
            got = llama.scaled_dot_product_attention(q, k, v, cache=None, scale=0.25, mask=mask)
            want = original(q, k, v, reference)
            assert got.shape == want.shape == (1, 6, 5, 16)
            assert mx.abs(got - want).max().item() < 1e-5, mask


def test_swiglu_matches_mlx_and_saturates_without_nan():
    gate = mx.concatenate([mx.random.normal((3, 40)) * 4, mx.array([[-200.0, -90.0, 0.0, 90.0] * 10])])
    x = mx.random.normal((4, 40))
    want = cpu_kernels._installed.get("swiglu", llama.swiglu)(gate, x)
    with numpy_kernels():
        got = llama.swiglu(gate, x)
    assert not np.isnan(np.array(got)).any()
    assert mx.abs(got - want).max().item() < 1e-4


def test_outside_the_block_and_for_other_dtypes_mlx_lm_runs_its_own():
    q, k, v = arrays(3, 3)
    with numpy_kernels():
        pass
    calls = []
    real = np.exp
    try:
        np.exp = lambda *a, **kw: calls.append(1) or real(*a, **kw)  # counts the NumPy path's exps
        mx.eval(llama.scaled_dot_product_attention(q, k, v, cache=None, scale=0.25, mask="causal"))
        mx.eval(llama.swiglu(q, q))
        assert calls == []  # outside the block
        with numpy_kernels():
            half = [a.astype(mx.float16) for a in (q, k, v)]
            mx.eval(llama.scaled_dot_product_attention(*half, cache=None, scale=0.25, mask="causal"))
            assert calls == []  # float16: MLX's own
            mx.eval(llama.swiglu(q, q))
            assert calls == [1]
    finally:
        np.exp = real


def test_a_compiled_step_traces_through_the_dispatchers_and_other_threads_are_not_affected():
    q, k, v = arrays(1, 4)

    def step(q, k, v):
        return llama.scaled_dot_product_attention(q, k, v, cache=None, scale=0.25, mask=None) * 2

    seen = []
    with numpy_kernels():
        eager = step(q, k, v)
        worker = threading.Thread(target=lambda: seen.append(cpu_kernels._on(q)))
        worker.start()
        worker.join()
        seen.append(cpu_kernels._on(q))
    assert seen == [False, True]  # the block is this thread's only
    compiled = mx.compile(step)  # the decode step is compiled outside any block
    assert mx.abs(compiled(q, k, v) - eager).max().item() < 1e-5
