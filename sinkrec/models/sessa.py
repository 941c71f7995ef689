"""Sessa as a recommendation backbone: item embedding → Sessa layers → LayerNorm → tied scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..batch import Batch
from ..checks import DROPOUT, Checked, OptionError, at_least, between, divides, one_of, option
from ..nn.sessa import SessaCache, SessaLayer
from .base import Encoded, SequentialRecommender


@dataclass
class SessaRecConfig(Checked):
    d_model: int = option(64, at_least(1))  # width of embeddings and hidden states
    n_layers: int = option(2, at_least(1))  # stacked Sessa layers
    n_heads: int = option(2, at_least(1))  # attention heads per layer (must divide d_model)
    n_kv_heads: int = option(0, at_least(0))  # 0: n_heads (else must divide n_heads)
    mixer: str = option("sessa", one_of("sessa", "attention", "gdn"))  # sessa | attention | gdn
    dropout: float = option(0.2, DROPOUT)  # on the item embeddings only (the paper's block has none)
    gamma_max: float = option(0.999, between(0, 1, open_low=True, open_high=True))  # bound of the feedback gain γ

    def check(self) -> None:
        divides(self, "n_heads", "d_model")
        if self.n_kv_heads and self.n_heads % self.n_kv_heads:
            raise OptionError("n_kv_heads", f"must divide n_heads ({self.n_heads}) or be 0, got {self.n_kv_heads}")


class SessaRec(SequentialRecommender):
    supports_streaming = True

    def __init__(self, n_items: int, max_len: int, options: SessaRecConfig):
        super().__init__(n_items, options.d_model)
        o = options
        self.layers = nn.ModuleList(SessaLayer(o.d_model, n_heads=o.n_heads, n_kv_heads=o.n_kv_heads or None,
                                               mixer=o.mixer, gamma_max=o.gamma_max) for _ in range(o.n_layers))
        self.drop = nn.Dropout(options.dropout)
        self.norm = nn.LayerNorm(options.d_model, eps=1e-5)

    def _run(self, items: torch.Tensor, caches: list[SessaCache] | None) -> torch.Tensor:
        x = self.drop(self.item_embedding(items) * self.d_model ** 0.5)
        for i, layer in enumerate(self.layers):
            x = layer(x, caches[i] if caches is not None else None)
        return self.norm(x)

    def encode(self, batch: Batch) -> Encoded:
        return Encoded(self._run(batch.items, None))

    def new_cache(self) -> list[SessaCache]:
        return [SessaCache() for _ in self.layers]

    def encode_step(self, items: torch.Tensor, cache: list[SessaCache], timestamps: torch.Tensor | None = None
                    ) -> torch.Tensor:
        return self._run(items, cache)
