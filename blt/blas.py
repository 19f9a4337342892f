"""Use OpenBLAS for MLX on Linux CPUs instead of the reference BLAS bundled with the `mlx[cpu]` wheel.

The Linux wheel links netlib's reference BLAS (~6 GFLOP/s on a 1024x1024 float32 matmul); Debian's
OpenBLAS does 160-320 GFLOP/s. MLX binds `cblas_sgemm` lazily from the global symbol scope, so OpenBLAS
wins if it is in that scope before `mlx.core` is first imported: `enable_openblas()` does
`ctypes.CDLL(path, RTLD_GLOBAL)`, and entry points (CLI, API, benches, tests) call it at start-up. Nothing
here runs at import. Loading after `mlx.core` is imported does nothing (measured: still ~5 GFLOP/s); then
`LD_PRELOAD=<path>` on the command line is the way. `SHVAYAMBHU_BLAS=reference` opts out. On macOS
(Accelerate) and elsewhere everything here is a no-op.

With OpenBLAS comes `blt/gemv_shim.c` (built by `pip install` when a C compiler is there): its cblas_sgemm sends
one-row products, a decoded token times a weight matrix, to OpenBLAS's sgemv, which streams the weights once
where sgemm packs them first (SmolLM2-135M at batch 1: 16.7 -> 24.5 tok/s). `SHVAYAMBHU_BLAS=openblas` loads
OpenBLAS without it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "SHVAYAMBHU_BLAS"
_NOTICE_ENV = "SHVAYAMBHU_BLAS_NOTICE_SHOWN"
INSTALL_HINT = "apt-get install libopenblas0-pthread"

_loaded_path: str | None = None
_shim: ctypes.CDLL | None = None
_notice_shown = False


@dataclass
class BlasStatus:
    """What BLAS MLX uses (or will use) in this process and how it got there."""

    backend: str  # "openblas" | "reference" | "accelerate" | "unknown"
    how: str  # "preload" | "ctypes" | "none" | "opt-out" | "too-late"
    path: str | None
    message: str
    gemv: bool = False  # one-row matmuls go to sgemv (gemv_shim.c)


def _multiarch() -> str:
    machine = platform.machine().lower()
    return {
        "x86_64": "x86_64-linux-gnu",
        "amd64": "x86_64-linux-gnu",
        "aarch64": "aarch64-linux-gnu",
        "arm64": "aarch64-linux-gnu",
    }.get(machine, f"{machine}-linux-gnu")


def openblas_candidates() -> list[Path]:
    """Debian/Ubuntu locations of an OpenBLAS that exports the CBLAS interface, best first."""
    lib = Path("/usr/lib") / _multiarch()
    return [
        lib / "openblas-pthread" / "libblas.so.3",
        lib / "openblas-openmp" / "libblas.so.3",
        lib / "openblas-pthread" / "libopenblas.so.0",
        lib / "libopenblas.so.0",
    ]


def find_openblas() -> str | None:
    """Path of the first installed OpenBLAS, or None."""
    for p in openblas_candidates():
        if p.exists():
            return str(p)
    return None


def mlx_uses_reference_blas() -> bool:
    """True when the installed MLX bundles the reference BLAS (the Linux `mlx[cpu]` wheel).

    Checked on disk, without importing mlx, by looking for the bundled `libblas-*.so*`.
    """
    if not sys.platform.startswith("linux"):
        return False
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return False
    for loc in spec.submodule_search_locations:  # may be several (a stray `mlx` folder on sys.path)
        for libs in Path(loc).parent.glob("mlx*.libs"):
            if any(libs.glob("libblas*.so*")):
                return True
    return False


def openblas_in_process() -> bool:
    """True when an OpenBLAS library is mapped into this process (LD_PRELOAD or an earlier load)."""
    if _loaded_path is not None:
        return True
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
        mapped = {line.split()[-1] for line in lines if "/" in line}
    except OSError:
        return False
    # numpy's wheel maps its own `libscipy_openblas64_` (suffixed symbols, no cblas_sgemm): not counted
    wanted = {str(p.resolve()) for p in openblas_candidates() if p.exists()}
    return any(m in wanted or os.path.realpath(m) in wanted for m in mapped if "blas" in m)


def _notice(msg: str) -> None:
    """One line on stderr, once per process tree."""
    global _notice_shown
    if _notice_shown or os.environ.get(_NOTICE_ENV):
        return
    _notice_shown = True
    os.environ[_NOTICE_ENV] = "1"
    print(msg, file=sys.stderr)


def status() -> BlasStatus:
    """Describe the current situation without changing anything."""
    if sys.platform == "darwin":
        return BlasStatus("accelerate", "none", None, "MLX uses Metal/Accelerate on macOS")
    if not sys.platform.startswith("linux"):
        return BlasStatus("unknown", "none", None, "not Linux: BLAS left as is")
    if openblas_in_process():
        how = "ctypes" if _loaded_path else "preload"
        gemv = " (one-row products through sgemv)" if _shim else ""
        return BlasStatus(
            "openblas", how, _loaded_path or find_openblas(), f"OpenBLAS is loaded{gemv}", _shim is not None
        )
    if not mlx_uses_reference_blas():
        return BlasStatus("unknown", "none", None, "MLX does not bundle the reference BLAS")
    path = find_openblas()
    if path is None:
        msg = f"MLX uses the slow reference BLAS; `{INSTALL_HINT}` makes CPU training 6-11x faster"
        return BlasStatus("reference", "none", None, msg)
    return BlasStatus("reference", "none", path, f"OpenBLAS at {path} is installed but not loaded")


def enable_openblas(verbose: bool = True) -> BlasStatus:
    """Load OpenBLAS with RTLD_GLOBAL so MLX binds to it; must run before `mlx.core` is imported."""
    global _loaded_path
    st = status()
    if st.backend != "reference":
        return st
    if os.environ.get(ENV_VAR, "").lower() == "reference":
        return BlasStatus("reference", "opt-out", None, f"{ENV_VAR}=reference: keeping the reference BLAS")
    if st.path is None:
        if verbose:
            _notice(f"shvayambhu: {st.message}")
        return st
    if "mlx.core" in sys.modules:
        return BlasStatus(
            "reference",
            "too-late",
            st.path,
            f"mlx.core was imported before OpenBLAS could be loaded; call enable_openblas() earlier "
            f"or run with LD_PRELOAD={st.path}",
        )
    try:
        openblas = ctypes.CDLL(st.path)  # local first: the shim must come before it in the global scope
        if os.environ.get(ENV_VAR, "").lower() != "openblas":
            _load_shim(openblas)
        ctypes.CDLL(st.path, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        return BlasStatus("reference", "none", st.path, f"could not load {st.path}: {e}")
    _loaded_path = st.path
    if verbose:
        _notice(f"shvayambhu: MLX uses OpenBLAS ({st.path}); set {ENV_VAR}=reference to opt out")
    return BlasStatus("openblas", "ctypes", st.path, f"loaded {st.path}", _shim is not None)


def shim_path() -> Path | None:
    """The compiled gemv_shim.c next to this file, or None where no C compiler built it."""
    return next(iter(sorted(Path(__file__).parent.glob("_gemv_shim*.so"))), None)


def _load_shim(openblas: ctypes.CDLL) -> None:
    """Put the shim's cblas_sgemm in the global scope, bound to ``openblas``'s sgemm and sgemv."""
    global _shim
    path = shim_path()
    if path is None or not hasattr(openblas, "cblas_sgemv"):
        return
    shim = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    shim.shv_gemv_bind(
        ctypes.cast(openblas.cblas_sgemm, ctypes.c_void_p), ctypes.cast(openblas.cblas_sgemv, ctypes.c_void_p)
    )
    shim.shv_gemv_forwarded.restype = ctypes.c_ulong
    _shim = shim


def gemv_forwarded() -> int | None:
    """How many matmuls the shim has sent to sgemv in this process (None: the shim is not loaded)."""
    return None if _shim is None else int(_shim.shv_gemv_forwarded())


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Measured float32 n x n matmul speed of MLX in this process, in GFLOP/s."""
    import mlx.core as mx  # heavy, and must come after enable_openblas()

    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a, b, a @ b)
    t = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    dt = (time.perf_counter() - t) / repeats
    return 2 * n**3 / dt / 1e9


if __name__ == "__main__":
    s = enable_openblas()
    print(f"{s.backend} ({s.how}): {s.message}; matmul {matmul_gflops():.1f} GFLOP/s")
