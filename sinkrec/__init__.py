"""sinkrec: long-sequence recommendation (SASRec, Gated DeltaNet, SinkRec, Sessa) with an honest
full-ranking harness.

The public API is small and imported on first use, so `import sinkrec` stays fast:
`load_dataset`, `train` → `Run`, `evaluate`, `Recommender` (and its streaming `Session`),
`make_config`. See the Python API page of the documentation.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Recommender", "Run", "Session", "evaluate", "load_dataset", "make_config", "train"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sinkrec' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
