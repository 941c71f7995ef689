"""The interface every recommender implements: items [+ timestamps] → hidden → scores."""

from __future__ import annotations

import torch
from torch import nn

from ..data.batching import Batch


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement `encode`; scoring uses the tied item table.

    - `encode(batch)` → hidden states [B, T, d], causal: position t sees inputs ≤ t only.
    - `item_scores(hidden)` → logits over all items [.., n_items + 1] (column 0 = padding).
    - `score_users(batch)` → scores of the next item after each user's last real position.
    - `extra_losses()` → auxiliary losses from the last forward (e.g. VQ), added by the trainer.
    """

    def __init__(self, n_items: int, d_model: int):
        super().__init__()
        self.n_items = n_items
        self.d_model = d_model
        self.item_embedding = nn.Embedding(n_items + 1, d_model, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=d_model ** -0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        """`encode`, so DistributedDataParallel can wrap the model."""
        return self.encode(batch)

    def item_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.item_embedding.weight.to(hidden.dtype).t()

    def last_hidden(self, batch: Batch) -> torch.Tensor:
        hidden = self.encode(batch)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, batch.lengths - 1]

    def score_users(self, batch: Batch) -> torch.Tensor:
        return self.item_scores(self.last_hidden(batch)).float()

    def extra_losses(self) -> dict[str, torch.Tensor]:
        return {}

    # ---- streaming (recurrent models): extend a history without recomputing its prefix -----
    supports_streaming = False

    def new_cache(self) -> object:
        raise NotImplementedError(f"{type(self).__name__} has no streaming path")

    def encode_step(self, items: torch.Tensor, cache: object, timestamps: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Hidden states [B, T_new, d] for new events, continuing from (and updating) `cache`."""
        raise NotImplementedError(f"{type(self).__name__} has no streaming path")
