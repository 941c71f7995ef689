"""Most-popular baseline: every user gets the catalogue ranked by training-split popularity.

It has no gradient training: `fit` counts items in one pass over the training sequences, and
the same full-ranking evaluator scores it (seen items filtered like any model's). A neural
model that does not beat it has learned nothing about the user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..batch import Batch
from ..errors import ConfigError
from .base import Encoded, SequentialRecommender


@dataclass
class PopConfig:
    """Pop has no options; the table lists it so that `model.name: pop` validates like any model."""


class FittedRecommender(SequentialRecommender):
    """A model fitted by counting (`fit`), never by the gradient trainer."""

    fitted = True  # sinkrec.compare fits it in one pass instead of calling the trainer

    def __init__(self, n_items: int):
        super().__init__(n_items, d_model=1)  # the tiny unused table keeps the base interface intact
        self.item_embedding.weight.requires_grad_(False)

    def fit(self, sequences: Iterable[np.ndarray]) -> FittedRecommender:
        raise NotImplementedError

    def encode(self, batch: Batch) -> Encoded:
        raise ConfigError(f"model '{type(self).__name__.lower()}' is fitted by counting, not trained by "
                          "gradient descent: use `sinkrec compare` (or sinkrec.training.baselines.fit_and_score)")


class Pop(FittedRecommender):
    def __init__(self, n_items: int, max_len: int, options: PopConfig):
        super().__init__(n_items)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit(self, sequences: Iterable[np.ndarray]) -> Pop:
        parts = [np.asarray(s, dtype=np.int64) for s in sequences]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        counts = np.bincount(flat, minlength=self.n_items + 1).astype(np.float32)
        counts[0] = 0.0
        self.counts = torch.from_numpy(counts).to(self.counts.device)
        return self

    def score_users(self, batch: Batch) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(batch.items.shape[0], -1).clone()
