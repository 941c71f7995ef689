"""SessaLM: token embedding (no absolute positions), N Sessa layers, final LayerNorm, linear head.

The same decoder with `mixer="attention"` is the Transformer baseline and with `mixer="gdn"` the
gated-delta-rule baseline: they differ only in the sequence mixer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..nn.sessa import SessaCache, SessaLayer


@dataclass
class LMConfig:
    vocab_size: int = 256  # tokens (256: bytes)
    d_model: int = 128  # width of embeddings and hidden states
    n_layers: int = 4  # stacked Sessa layers
    n_heads: int = 4  # attention heads per layer
    n_kv_heads: int = 0  # 0: n_heads (no GQA)
    mixer: str = "sessa"  # sessa | attention | gdn
    tie_weights: bool = True  # output head shares the embedding table
    gamma_max: float = 0.999  # bound of the feedback gain γ


class SessaLM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(SessaLayer(cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads or None,
                                               mixer=cfg.mixer, gamma_max=cfg.gamma_max) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor, caches: list[SessaCache] | None = None) -> torch.Tensor:
        """tokens [B, T] → logits [B, T, V]; with `caches`, continues a previous call."""
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, caches[i] if caches is not None else None)
        return self.head(self.norm(x))

    def new_caches(self) -> list[SessaCache]:
        return [SessaCache() for _ in self.layers]

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new: int, temperature: float = 0.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation; the prompt is fed once, then one token a step."""
        caches = self.new_caches()
        logits = self(prompt, caches)[:, -1]
        out = [prompt]
        for _ in range(max_new):
            if temperature <= 0:
                token = logits.argmax(-1, keepdim=True)
            else:
                scaled = logits / temperature
                if top_k:
                    kth = scaled.topk(top_k, -1).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                token = torch.multinomial(torch.softmax(scaled.float(), -1), 1, generator=generator)
            out.append(token)
            logits = self(token, caches)[:, -1]
        return torch.cat(out, 1)
