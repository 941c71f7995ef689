"""The tensor contract between data, models and training: one padded batch of histories.

It lives below `data` and `models` so that models can read a batch without knowing where it came
from (files, a serving request, a benchmark's random tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Right-padded histories; `lengths` counts the real positions, so a user's state is at lengths − 1."""

    items: torch.Tensor  # [B, T] input item ids, 0 = padding
    lengths: torch.Tensor  # [B]
    timestamps: torch.Tensor | None = None  # [B, T] float64 seconds, or None
    targets: torch.Tensor | None = None  # training: [B, T] next items (0 = no target); eval: [B]
    seen: torch.Tensor | None = None  # eval: [B, S] full input history, for filter_seen
    users: torch.Tensor | None = None  # [B] user indices

    def rows(self, index: slice) -> Batch:
        """A subset of the rows (e.g. one rank's share of a global batch)."""
        return Batch(**{k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})

    def to(self, device: torch.device | str) -> Batch:
        move = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                for k, v in self.__dict__.items()}
        return Batch(**move)
