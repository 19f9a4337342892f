"""`python -m rag.serve ...`: the same as `shvayambhu serve ...`."""

import sys

from rag.cli import main

main(["serve", *sys.argv[1:]])
