"""Conditional memory (spec/sinkrec.md §3.2): local pattern → RVQ codes → learnable memory tables.

Similar local patterns share codes, so the tables store collaborative patterns across users.
The memory also provides keys/values per position (for attention and TDGD) and per prototype
(the probe keys of the state-sink diagnostics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import Checked, at_least, between, one_of, option
from .basic import RMSNorm
from .rvq import ResidualVQ


@dataclass
class MemoryReadout:
    memory: torch.Tensor  # m_t [B, T, d]
    codes: torch.Tensor  # [B, T, L] (0 at padding)
    loss: torch.Tensor  # VQ loss (scalar)


@dataclass
class MemoryOptions(Checked):
    """The conditional memory's settings, declared once: SinkRec's options inherit them."""

    pattern_len: int = option(3, at_least(1))  # n: items in the local pattern that is quantized
    rvq_levels: int = option(3, at_least(1))  # residual quantization levels (one memory table each)
    rvq_codes: int = option(256, at_least(1))  # codes per level
    code_dim: int = option(32, at_least(1))  # width of the pattern vector that is quantized
    rvq_mode: str = option("ema", one_of("ema", "grad"))  # ema (dead-code restart) | grad (codebook + commitment loss)
    rvq_decay: float = option(0.99, between(0, 1, open_high=True))  # EMA decay of the codebooks
    rvq_dead_threshold: float = option(0.05, at_least(0))  # EMA count below which a code is restarted
    commitment: float = option(0.25, at_least(0))  # weight of the commitment loss inside the VQ loss
    kmeans_init: bool = True  # initialise codebooks by k-means on the first training batch
    quantized_to_memory: bool = True  # add a straight-through projection of the quantized pattern


class ConditionalMemory(nn.Module):
    def __init__(self, d_model: int, *, options: MemoryOptions):
        """Args:
            d_model: width of the item embeddings and of the memory vectors.
            options: pattern length, RVQ and readout settings (any object with MemoryOptions' fields).
        """
        super().__init__()
        o = options
        self.pattern_len = o.pattern_len
        self.pattern = nn.Linear(o.pattern_len * d_model, o.code_dim)
        self.rvq = ResidualVQ(o.code_dim, levels=o.rvq_levels, codes=o.rvq_codes, mode=o.rvq_mode, decay=o.rvq_decay,
                              commitment=o.commitment, dead_threshold=o.rvq_dead_threshold, kmeans_init=o.kmeans_init)
        self.tables = nn.Parameter(torch.randn(o.rvq_levels, o.rvq_codes, d_model) * 0.02)
        # straight-through path: lets the task loss reach the pattern encoder (else it only learns
        # to be easy to quantize)
        self.from_quantized = nn.Linear(o.code_dim, d_model, bias=False) if o.quantized_to_memory else None

    def local_pattern(self, emb: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """p_t = W_p [e_{t−n+1}; …; e_t], causal and zero-padded (or continued from `past` [B, n−1, d])."""
        n = self.pattern_len
        if past is None:
            past = emb.new_zeros(emb.shape[0], n - 1, emb.shape[2])
        full = torch.cat([past.to(emb.dtype), emb], 1)
        t = emb.shape[1]
        window = torch.cat([full[:, i: i + t] for i in range(n)], dim=-1)  # oldest … newest
        return self.pattern(window)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, past: torch.Tensor | None = None) -> MemoryReadout:
        p = self.local_pattern(emb, past)
        b, t, dc = p.shape
        out = self.rvq(p.reshape(b * t, dc), mask.reshape(-1))  # padding weighted out, not gathered
        keep = mask[..., None]
        codes = out.codes.view(b, t, -1) * keep
        memory = self.lookup(codes)
        if self.from_quantized is not None:
            memory = memory + self.from_quantized(out.quantized.view(b, t, dc).to(memory.dtype))
        memory = memory * keep.to(memory.dtype)
        return MemoryReadout(memory=memory, codes=codes, loss=out.loss)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """m = Σ_l M^l[c^l]."""
        return sum(self.tables[level][codes[..., level]] for level in range(self.tables.shape[0]))

    def prototypes(self, levels: int = 1) -> torch.Tensor:
        """Memory vectors of the codes of the first `levels` levels: [levels·K, d]."""
        return self.tables[:levels].reshape(-1, self.tables.shape[-1])


class MemoryReinjection(nn.Module):
    """Engram-style context gate: a = σ(⟨RMSNorm(h), RMSNorm(W_k m)⟩/√d), h ← h + a·W_v m."""

    def __init__(self, d_model: int):
        """Args:
            d_model: width of the hidden state and of the memory vectors.
        """
        super().__init__()
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.h_norm = RMSNorm(d_model)
        self.k_norm = RMSNorm(d_model)

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid((self.h_norm(h) * self.k_norm(self.key(memory))).sum(-1, keepdim=True)
                             / h.shape[-1] ** 0.5)
        return gate * self.value(memory)


def memory_head_keys(proj: nn.Linear, memory: torch.Tensor, n_heads: int) -> torch.Tensor:
    """L2-normalised memory keys per head: [..., d] → [..., H, Dk]."""
    keys = proj(memory)
    return F.normalize(keys.view(*keys.shape[:-1], n_heads, -1), dim=-1)
