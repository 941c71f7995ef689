"""GDN's one-event step for B users at once, batch-invariant (row_ops.py says how): row b is bit for bit
user b's step alone, so concurrent requests share one step and replays stay exact."""

from __future__ import annotations

import torch

from .row_ops import DeltaRows, SwiGLURows, lanes, rms


def supports(model) -> bool:
    """The plain GDN recommender in eval mode, float32 or float64 weights."""
    return (type(model).__name__ == "GDNRec" and not model.training
            and model.item_embedding.weight.dtype in (torch.float32, torch.float64))


class _Layer:
    """One GDN block's weights, arranged once for row steps."""

    def __init__(self, block):
        self.mixer, self.ffn = DeltaRows(block.mixer), SwiGLURows(block.ffn)
        self.norm1, self.norm2 = block.norm1, block.norm2


class RowsStep:
    """`rows(caches, items, whens)`: one event for each of B GDNRec users (their caches updated in place),
    hidden outputs [B, d] (GDN has no use for the times); `step(cache, item, when)`: the same for one
    user, hidden [1, 1, d]."""

    def __init__(self, model):
        self.model = model
        with torch.inference_mode():
            self.layers = [_Layer(block) for block in model.blocks]

    def __call__(self, cache: list, item: int, when: float | None = None) -> torch.Tensor:
        return self.rows([cache], [item])[:, None]

    @torch.inference_mode()
    def rows(self, caches: list[list], items: list[int], whens: list[float] | None = None) -> torch.Tensor:
        model = self.model
        x = model.item_embedding.weight[torch.tensor(items)] * model.d_model ** 0.5  # [B, d]
        for n, layer in enumerate(self.layers):
            mine = [c[n] for c in caches]
            q, k, v, pre, b, gate = layer.mixer.project(rms(x, layer.norm1), mine)
            o = layer.mixer.recur(mine, q, k, v, layer.mixer.decay(pre), lanes(torch.sigmoid, b))
            x = x + layer.mixer.output(o, gate)
            x = x + layer.ffn(rms(x, layer.norm2))
        return rms(x, model.norm)
