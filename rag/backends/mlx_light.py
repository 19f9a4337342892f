"""Import mlx-lm's model code without its package `__init__`, which imports transformers and torch (~1.5-3 s).

`mlx_lm/__init__.py` re-exports `convert`, `generate` and `load`, whose modules import transformers; the
llama model, the KV cache protocol and the samplers need none of it. `light_mlx_lm()` registers the package
module without running its `__init__`; the first access to a name that only `__init__` defines (e.g.
`from mlx_lm import load`) runs it then, so every other user of mlx-lm still sees the whole package.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def light_mlx_lm() -> None:
    """Make `import mlx_lm.models.llama` (and .cache, .sample_utils) cheap; a no-op once mlx_lm is imported."""
    if "mlx_lm" in sys.modules:
        return
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed: the caller's own import reports it
    module = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> Any:  # PEP 562: only names the module does not have yet come here
        if name.startswith("__") and name.endswith("__") and name not in ("__all__", "__version__"):
            raise AttributeError(name)  # probes such as __wrapped__ need not import transformers
        vars(module).pop("__getattr__", None)
        spec.loader.exec_module(module)  # the real __init__, once: convert, generate, load, __version__
        return getattr(module, name)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["mlx_lm"] = module
