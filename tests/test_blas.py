"""OpenBLAS under MLX on Linux, and the shim that sends one-row matmuls to sgemv (blt/gemv_shim.c)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blt import blas


def test_blas_opt_out_keeps_the_reference_blas(monkeypatch: pytest.MonkeyPatch):
    """With SHVAYAMBHU_BLAS=reference an installed OpenBLAS is not loaded (a stand-in status: any machine)."""
    reference = blas.BlasStatus("reference", "none", "/usr/lib/libopenblas.so.0", "installed but not loaded")
    loaded: list[str] = []

    def cdll(path: str, *args: object, **kwargs: object) -> None:
        loaded.append(path)
        raise OSError("not really loaded by this test")

    monkeypatch.setattr(blas, "status", lambda: reference)
    monkeypatch.setattr(blas.ctypes, "CDLL", cdll)
    monkeypatch.delitem(sys.modules, "mlx.core", raising=False)  # as in a process that has not imported MLX yet
    monkeypatch.setenv("SHVAYAMBHU_BLAS", "reference")
    st = blas.enable_openblas(verbose=False)
    assert (st.backend, st.how, st.path) == ("reference", "opt-out", None) and loaded == []
    monkeypatch.setenv("SHVAYAMBHU_BLAS", "")  # without the opt-out the same situation does try to load it
    assert blas.enable_openblas(verbose=False).how == "none" and loaded == [reference.path]


_PROBE = "from blt import blas; st = blas.enable_openblas(verbose=False); print(st.backend, st.how)\n"
_PROBE += "print(blas.openblas_in_process())"


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and blas.find_openblas() and blas.mlx_uses_reference_blas()),
    reason="needs Linux, the reference-BLAS mlx[cpu] wheel and an installed OpenBLAS",
)
@pytest.mark.parametrize(("env", "want"), [(None, "openblas ctypes"), ("reference", "reference opt-out")])
def test_a_fresh_process_loads_openblas_unless_opted_out(env: str | None, want: str):
    """In a new process (nothing preloaded) OpenBLAS is mapped in, except when SHVAYAMBHU_BLAS=reference."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SHVAYAMBHU_BLAS")}
    if env is not None:
        environ["SHVAYAMBHU_BLAS"] = env
    root = str(Path(blas.__file__).resolve().parents[1])
    environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [environ.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [want, str(env is None)]


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
