"""Sessa as a language model: the decoder, byte-level text training, and the long-context tasks.

- `model`: SessaLM (Sessa, attention or GDN mixer) with incremental decoding.
- `text`: `sinkrec lm train / generate` on a text file or the built-in stories (`tinytext`).
- `tasks`: SymbolSoup and Diffuse MQAR generators; `task_training`: one run on them.
- `loop`: the step loop both trainings share.
"""

from .model import LMConfig, SessaLM
from .text import generate, train_lm

__all__ = ["LMConfig", "SessaLM", "generate", "train_lm"]
