"""`python -m rag.serve ...`: the same as `shvayambhu serve ...` (rag.serve.command), without the CLI."""

import sys

from rag.serve.command import main

sys.exit(main(sys.argv[1:]))
