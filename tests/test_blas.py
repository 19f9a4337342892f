"""OpenBLAS under MLX on Linux, and the shim that sends one-row matmuls to sgemv (blt/gemv_shim.c)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from blt import blas


def test_blas_opt_out_is_respected(monkeypatch: pytest.MonkeyPatch):
    st = blas.status()
    assert st.backend in ("openblas", "reference", "accelerate", "unknown")
    monkeypatch.setenv("SHVAYAMBHU_BLAS", "reference")
    if st.backend == "reference":
        assert blas.enable_openblas(verbose=False).how == "opt-out"
    assert os.environ["SHVAYAMBHU_BLAS"] == "reference"


@pytest.mark.skipif(not sys.platform.startswith("linux") or blas.find_openblas() is None, reason="Linux + OpenBLAS")
def test_one_row_matmuls_go_through_sgemv_and_equal_numpy():
    """Every transpose layout of a [1, K] or [M, 1] product is forwarded and exact; wider ones are not."""
    assert blas.shim_path() is not None, "`pip install -e .` did not build blt/gemv_shim.c: is gcc installed?"
    assert blas.status().gemv and blas.status().backend == "openblas"  # conftest enabled it before mlx
    import mlx.core as mx

    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 70)).astype(np.float32)
    x = rng.standard_normal((1, 70)).astype(np.float32)
    col = rng.standard_normal((300, 1)).astype(np.float32)
    W, X, C = mx.array(w), mx.array(x), mx.array(col)
    cases = [
        (X, W.T, x @ w.T),  # a decoded token times a weight matrix stored [out, in]
        (X.T.T, W.T, x @ w.T),
        (W, X.T, w @ x.T),  # column output
        (C.T, W, col.T @ w),  # row times a plain (untransposed) matrix
        (W.T, C, w.T @ col),  # transposed matrix times a column
        (mx.array(x[:, :1]), mx.array(x[:, :5]), x[:, :1] @ x[:, :5]),  # K = 1
    ]
    before = blas.gemv_forwarded()
    for a, b, want in cases:
        np.testing.assert_allclose(np.array(a @ b), want, rtol=1e-5, atol=1e-4)
    assert blas.gemv_forwarded() - before == len(cases)
    wide = mx.array(rng.standard_normal((4, 70)).astype(np.float32))
    before = blas.gemv_forwarded()
    np.testing.assert_allclose(np.array(wide @ W.T), np.array(wide) @ w.T, rtol=1e-5, atol=1e-4)
    assert blas.gemv_forwarded() == before
