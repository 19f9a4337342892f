"""`python -m rag.cli`: the same as the `shvayambhu` console script."""

from rag.cli import main

main()
