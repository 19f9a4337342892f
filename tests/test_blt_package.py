"""Package hygiene of blt: importing it has no side effects (no MLX, no BLAS), one error root, no imports of
the project's other packages, no module over 500 lines, no global seeds. Fast: one subprocess and an AST scan."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import blt.errors
from blt.errors import BLTError

PKG = Path(blt.errors.__file__).resolve().parent
REPO = PKG.parent
MODULES = sorted(PKG.glob("*.py"))

PROBE = """
import json, sys
import blt, blt.hashing, blt.tokens
def blas_maps():
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "blas" in line.lower() and "/" in line})
before = {"mlx": sorted(m for m in sys.modules if m.split(".")[0] == "mlx"), "blas": blas_maps()}
import numpy  # control: numpy's wheel maps its own OpenBLAS, so the scan can see a BLAS library
print(json.dumps({**before, "blas_after_numpy": blas_maps()}))
"""


def test_importing_blt_loads_neither_mlx_nor_a_blas() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["mlx"] == [] and got["blas"] == [], got
    assert got["blas_after_numpy"], "the /proc/self/maps scan found no BLAS even after importing numpy"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_blt_imports_none_of_the_project_packages() -> None:
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in ("rag", "index", "ingest")]
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"


def test_every_blt_exception_derives_from_blt_error() -> None:
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases
            ):
                assert path.name == "errors.py", f"{path.name}:{node.lineno} defines {node.name} outside blt/errors.py"
    errors = [c for _, c in inspect.getmembers(blt.errors, inspect.isclass) if c.__module__ == "blt.errors"]
    assert len(errors) >= 4 and all(issubclass(c, BLTError) for c in errors)


def test_modules_are_small_and_set_no_global_state() -> None:
    for path in MODULES:
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 500, f"{path.name} has {len(text.splitlines())} lines"
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and node.attr == "__dict__":
                raise AssertionError(f"{path.name}:{node.lineno} touches __dict__")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "seed":
                owner = ast.unparse(node.func.value)
                assert owner not in ("np.random", "numpy.random", "random"), f"{path.name}:{node.lineno} seeds {owner}"
        top_level_calls = [n for n in _tree(path).body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
        assert not top_level_calls, f"{path.name} runs {ast.unparse(top_level_calls[0])} at import"
