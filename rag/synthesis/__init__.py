"""Corpus synthesis: ask a chat backend many prompts and keep the validated answers as a durable, resumable
JSONL corpus (the `shvayambhu generate` command). "Generate" elsewhere means decoding (blt.generate)."""

from rag.synthesis.config import SynthesisConfig, SynthesisError, SynthesisSummary, format_summary
from rag.synthesis.run import synthesize

__all__ = ["SynthesisConfig", "SynthesisError", "SynthesisSummary", "format_summary", "synthesize"]
