"""The interface every recommender implements: a batch of histories → `Encoded` → scores.

A forward pass returns everything it produces (hidden states, auxiliary losses, memory codes):
nothing is left on `self` for the trainer or a diagnostic to fetch afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..batch import Batch


@dataclass
class Encoded:
    """What one forward pass over a batch produces."""

    hidden: torch.Tensor  # [B, T, d], causal: position t sees inputs ≤ t only
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # auxiliary, weighted: the trainer adds them
    codes: torch.Tensor | None = None  # [B, T, L] memory codes (SinkRec with memory), 0 at padding


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement `encode`; scoring uses the tied item table.

    - `encode(batch)` → `Encoded` (hidden states [B, T, d], auxiliary losses, codes).
    - `forward(batch)` is `encode(batch)`, so DDP and torch.compile can wrap the model.
    - `item_scores(hidden)` → logits over all items [.., n_items + 1] (column 0 = padding).
    - `score_users(batch)` → scores of the next item after each user's last real position.
    - `epoch_stats()` → per-epoch diagnostics to log (e.g. codebook usage); {} by default.
    """

    supports_streaming = False

    def __init__(self, n_items: int, d_model: int):
        super().__init__()
        self.n_items = n_items
        self.d_model = d_model
        self.item_embedding = nn.Embedding(n_items + 1, d_model, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=d_model ** -0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, batch: Batch) -> Encoded:
        raise NotImplementedError

    def forward(self, batch: Batch) -> Encoded:
        return self.encode(batch)

    def item_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_embedding.weight.to(hidden.dtype).t()

    def last_hidden(self, batch: Batch) -> torch.Tensor:
        hidden = self(batch).hidden
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, batch.lengths - 1]

    def score_users(self, batch: Batch) -> torch.Tensor:
        return self.item_scores(self.last_hidden(batch)).float()

    def epoch_stats(self) -> dict[str, float]:
        """Diagnostics gathered over an epoch (counters reset on each call); none by default."""
        return {}

    # ---- streaming (recurrent models): extend a history without recomputing its prefix -----
    def new_cache(self) -> object:
        raise NotImplementedError(f"{type(self).__name__} has no streaming path")

    def encode_step(self, items: torch.Tensor, cache: object, timestamps: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Hidden states [B, T_new, d] for new events, continuing from (and updating) `cache`."""
        raise NotImplementedError(f"{type(self).__name__} has no streaming path")
