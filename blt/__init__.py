"""The Byte Latent Transformer in MLX. Importing the package first puts OpenBLAS under MLX on Linux CPUs."""

from blt import blas

blas.enable_openblas(verbose=False)  # must run before mlx.core is first imported; a no-op elsewhere
