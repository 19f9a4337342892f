"""NumPy for the transcendental parts of an eager prompt prefill on a CPU: SwiGLU's sigmoid and attention's softmax.

MLX's CPU elementwise kernels are scalar on x86 (its `exp` costs ~27 ns a float here; NumPy's vectorised one
~3 ns), so in a prompt's prefill the exps of SwiGLU and of attention's softmax cost more than all the weight
matmuls: 291 SmolLM2 tokens spend ~1.2 of ~2 CPU seconds in them. Inside `numpy_kernels()` the llama model of
mlx-lm computes those two through NumPy instead: the matmuls stay MLX's (OpenBLAS), only the exps and the
normalisation move, on evaluated float32 arrays. The results agree with MLX's to float32 rounding (~1e-6).

Only eager code may run inside the block (a compiled or traced function cannot hand arrays to NumPy), only on
the CPU device, only in the thread that entered it; everywhere else mlx-lm's own functions run unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import numpy as np

_active = threading.local()
_installed: dict[str, Any] = {}  # mlx-lm's originals, once the dispatchers replace them
_install_lock = threading.Lock()


@contextmanager
def numpy_kernels() -> Iterator[None]:
    """Within the block (this thread, CPU device only) mlx-lm's llama SwiGLU and attention use NumPy's exp."""
    if mx.default_device() != mx.cpu:
        yield
        return
    _install()
    before = getattr(_active, "on", False)
    _active.on = True
    try:
        yield
    finally:
        _active.on = before


def _install() -> None:
    """Put the dispatchers into mlx-lm's llama module, once per process."""
    with _install_lock:
        if _installed:
            return
        import mlx_lm.models.llama as llama

        _installed["swiglu"] = llama.swiglu
        _installed["sdpa"] = llama.scaled_dot_product_attention
        llama.swiglu = _swiglu
        llama.scaled_dot_product_attention = _attention


def _on(*arrays: mx.array) -> bool:
    return getattr(_active, "on", False) and all(a.dtype == mx.float32 for a in arrays)


def _swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """silu(gate) * x."""
    if not _on(gate, x):
        return _installed["swiglu"](gate, x)
    mx.eval(gate, x)
    g = np.asarray(gate)
    with np.errstate(over="ignore"):  # exp(-g) overflows to inf for g < -88: silu is -0 there, as it should be
        s = np.exp(-g)
    s += 1.0
    np.divide(g, s, out=s)
    s *= np.asarray(x)
    return mx.array(s)


def _attention(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    cache: Any,
    scale: float,
    mask: Any,
    sinks: mx.array | None = None,
) -> mx.array:
    """softmax(q k^T * scale + mask) v with grouped KV heads: MLX matmuls, the softmax in NumPy."""
    if sinks is not None or hasattr(cache, "bits") or not _on(queries, keys, values):
        return _installed["sdpa"](queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)
    B, H, N, D = queries.shape
    KH, S = keys.shape[1], keys.shape[2]
    rep = H // KH  # query heads kh*rep .. kh*rep+rep-1 read KV head kh
    scores = (queries.reshape(B, KH, rep * N, D) * scale) @ keys.swapaxes(-1, -2)
    mx.eval(scores)
    if isinstance(mask, mx.array):
        mx.eval(mask)
    a = np.array(scores).reshape(B, H, N, S)
    if isinstance(mask, str):  # "causal": query i (of the last N positions) sees keys up to S - N + i
        a = np.where(np.arange(S)[None, :] <= (S - N + np.arange(N))[:, None], a, -np.inf)
    elif mask is not None:
        m = np.asarray(mask)
        a = np.where(m, a, -np.inf) if m.dtype == np.bool_ else a + m
    top = a.max(axis=-1, keepdims=True)
    top[~np.isfinite(top)] = 0.0  # a row that sees nothing (padding) gives zeros, not NaN
    a -= top
    np.exp(a, out=a)
    total = a.sum(axis=-1, keepdims=True)
    total[total == 0] = 1.0
    a /= total
    probs = mx.array(a.astype(np.float32, copy=False).reshape(B, KH, rep * N, S))
    return (probs @ values).reshape(B, H, N, D)
