"""Plain Gated DeltaNet recommender: stacked (GatedDeltaNet + SwiGLU) pre-norm blocks.

No position embeddings: the recurrence is ordered by construction. It streams: a growing history
is extended one event (or chunk) at a time from the cached recurrent and conv states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..batch import Batch
from ..checks import DROPOUT, Checked, above, at_least, heads_fit, one_of, option
from ..nn.basic import RMSNorm, SwiGLU
from ..nn.gated_deltanet import DeltaCache, GatedDeltaNet
from ..ops.delta_rule import IMPLS
from .base import Encoded, SequentialRecommender


@dataclass
class GDNConfig(Checked):
    d_model: int = option(64, at_least(1))  # width of embeddings and hidden states
    n_layers: int = option(2, at_least(1))  # stacked (GatedDeltaNet + SwiGLU) blocks
    n_heads: int = option(2, at_least(1))  # recurrent heads per layer
    head_dim: int = option(0, at_least(0))  # 0: d_model / n_heads (then n_heads must divide d_model)
    dropout: float = option(0.2, DROPOUT)  # dropout on embeddings, residual branches and the FFN
    ffn_mult: float = option(4.0, above(0))  # SwiGLU hidden width ≈ ffn_mult·d·2/3
    conv_size: int = option(4, at_least(1))  # causal short conv width on q, k, v
    impl: str = option("auto", one_of(*IMPLS))  # delta-rule path: auto | chunked | reference | triton

    def check(self) -> None:
        heads_fit(self)


class GDNBlock(nn.Module):
    """GatedDeltaNet → SwiGLU, each a pre-norm residual."""

    def __init__(self, o: GDNConfig):
        super().__init__()
        self.norm1 = RMSNorm(o.d_model)
        self.mixer = GatedDeltaNet(o.d_model, n_heads=o.n_heads, head_dim=o.head_dim or None, conv_size=o.conv_size,
                                   impl=o.impl)
        self.norm2 = RMSNorm(o.d_model)
        self.ffn = SwiGLU(o.d_model, ffn_mult=o.ffn_mult, dropout=o.dropout)
        self.drop = nn.Dropout(o.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: DeltaCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm1(x), mask, cache))
        return x + self.drop(self.ffn(self.norm2(x)))


class GDNRec(SequentialRecommender):
    supports_streaming = True

    def __init__(self, n_items: int, max_len: int, options: GDNConfig):
        super().__init__(n_items, options.d_model)
        self.drop = nn.Dropout(options.dropout)
        self.blocks = nn.ModuleList(GDNBlock(options) for _ in range(options.n_layers))
        self.norm = RMSNorm(options.d_model)

    def _run(self, items: torch.Tensor, caches: list[DeltaCache] | None) -> torch.Tensor:
        x = self.drop(self.item_embedding(items) * self.d_model ** 0.5)
        mask = items > 0 if caches is None else None
        for i, block in enumerate(self.blocks):
            x = block(x, mask, caches[i] if caches is not None else None)
        return self.norm(x)

    def encode(self, batch: Batch) -> Encoded:
        return Encoded(self._run(batch.items, None))

    def new_cache(self) -> list[DeltaCache]:
        return [block.mixer.new_cache() for block in self.blocks]

    def encode_step(self, items: torch.Tensor, cache: list[DeltaCache], timestamps: torch.Tensor | None = None
                    ) -> torch.Tensor:
        return self._run(items, cache)
