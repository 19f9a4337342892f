"""The Byte Latent Transformer in MLX.

Importing this package has no side effects. A process that wants the fast BLAS under MLX on a Linux CPU
calls ``blt.blas.enable_openblas()`` at start-up, before anything imports ``mlx.core``.
"""
