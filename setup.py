"""The one thing pyproject.toml cannot say without a warning: the optional C library `blt._gemv_shim`.

It is not a Python module: blt/blas.py loads it beside OpenBLAS so that MLX's one-row matmuls (decoding a token)
run as matrix-vector products. Optional: without a C compiler everything works, slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("blt._gemv_shim", sources=["blt/gemv_shim.c"], optional=True)])
