"""The consciousness layer: what decides, before a backend is called, what the model is told and how sure to be.

Four mechanisms, each in its own module and each testable:
- `selfmodel`: identity, values and style from `[self_model]`, pinned into every prompt;
- `workspace`: a global workspace (Baars; Dehaene) where exemplars, memories, reflections and recent turns
  compete by salience for the prompt budget; the winners are broadcast to the backend;
- `memory`: a memory stream per session (Park et al., 2023): recency, importance and relevance, reflections;
- `metacognition`: a confidence in [0, 1] from the retrieval evidence and the generator's own probabilities;
and `prompt`, which renders the winners as chat messages (retrieved text as quoted data, never instructions).

It knows backends only by their protocol (`rag.backends.base`); it imports no backend, CLI or LangChain.
"""
