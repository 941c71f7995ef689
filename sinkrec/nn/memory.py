"""Conditional memory (spec/sinkrec.md §3.2): local pattern → RVQ codes → learnable memory tables.

Similar local patterns share codes, so the tables store collaborative patterns across users.
The memory also provides keys/values per position (for attention and TDGD) and per prototype
(the probe keys of the state-sink diagnostics).

Memory of what recurs: each code's share of the positions it quantizes is tracked by an EMA; a
position whose level-0 code is rarer than `recur_share / K` reads a null memory (zero vector, no
memory slot, zero coverage), so "memory-covered" means a pattern that recurs, not any pattern.
Isolation: the pattern encoder reads the item embeddings through a stop-gradient (`pattern_detach`),
so neither the VQ losses nor the memory path move the shared item table.
Identity at initialisation: the reinjection value projection starts at zero (see also TDGD and the
memory attention); memory parameters draw from their own random stream (`own_rng`), so a model with
memory has, seed for seed, the same shared weights as one without, and computes the same outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    recurs: torch.Tensor  # [B, T] 1 where the level-0 code recurs (frequent), 0 at null codes and padding


@contextmanager
def own_rng() -> Iterator[None]:
    """Parameters created inside draw from a stream of their own, seeded from (not advancing) the
    global one: the layers created after them get the same initial values with or without them."""
    seed = int(torch.randint(0, 2 ** 62, (), generator=torch.Generator().set_state(torch.get_rng_state()),
                             device="cpu"))  # a CPU generator; also under a meta/cuda default device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed ^ 0x5EED)
        yield


@dataclass
class MemoryOptions(Checked):
    """The conditional memory's settings, declared once: SinkRec's options inherit them."""

    pattern_len: int = option(3, at_least(1))  # n: items in the local pattern that is quantized
    rvq_levels: int = option(2, at_least(1))  # residual quantization levels (one memory table each)
    rvq_codes: int = option(64, at_least(1))  # codes per level
    code_dim: int = option(32, at_least(1))  # width of the pattern vector that is quantized
    rvq_mode: str = option("ema", one_of("ema", "grad"))  # ema (dead-code restart) | grad (codebook + commitment loss)
    rvq_decay: float = option(0.99, between(0, 1, open_high=True))  # EMA decay of the codebooks at the start
    rvq_decay_final: float = option(0.999, between(0, 1, open_high=True))  # decay after the warm-up (settled codebooks)
    rvq_decay_warmup: int = option(2000, at_least(0))  # steps over which the EMA decay rises to rvq_decay_final
    rvq_dead_threshold: float = option(0.05, at_least(0))  # EMA count below which a code is restarted
    commitment: float = option(0.25, at_least(0))  # weight of the commitment loss inside the VQ loss
    kmeans_init: bool = True  # initialise codebooks by k-means on the first training batch
    quantized_to_memory: bool = True  # add a straight-through projection of the quantized pattern
    pattern_detach: bool = True  # stop-gradient between the item table and the pattern encoder (memory cannot move it)
    recur_share: float = option(1.0, at_least(0))  # code recurs if EMA share ≥ this/K, else null memory (0: all)


class ConditionalMemory(nn.Module):
    def __init__(self, d_model: int, *, options: MemoryOptions):
        """Args:
            d_model: width of the item embeddings and of the memory vectors.
            options: pattern length, RVQ and readout settings (any object with MemoryOptions' fields).
        """
        super().__init__()
        o = options
        self.pattern_len, self.detach, self.recur_share = o.pattern_len, o.pattern_detach, o.recur_share
        self.pattern = nn.Linear(o.pattern_len * d_model, o.code_dim)
        self.rvq = ResidualVQ(o.code_dim, levels=o.rvq_levels, codes=o.rvq_codes, mode=o.rvq_mode, decay=o.rvq_decay,
                              decay_final=o.rvq_decay_final, decay_warmup=o.rvq_decay_warmup, commitment=o.commitment,
                              dead_threshold=o.rvq_dead_threshold, kmeans_init=o.kmeans_init)
        self.tables = nn.Parameter(torch.randn(o.rvq_levels, o.rvq_codes, d_model) * 0.02)
        self.register_buffer("level_offsets", torch.arange(o.rvq_levels) * o.rvq_codes, persistent=False)
        # straight-through path: lets the task loss reach the pattern encoder (else it only learns
        # to be easy to quantize)
        self.from_quantized = nn.Linear(o.code_dim, d_model, bias=False) if o.quantized_to_memory else None

    def local_pattern(self, emb: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """p_t = W_p [e_{t−n+1}; …; e_t], causal and zero-padded (or continued from `past` [B, n−1, d]).

        Computed as Σ_i W_p^i e_{t−n+1+i} from one matmul over the padded sequence: no window copies.
        """
        n, (b, t, d) = self.pattern_len, emb.shape
        full = F.pad(emb, (0, 0, n - 1, 0)) if past is None else torch.cat([past.to(emb.dtype), emb], 1)
        weight = self.pattern.weight.to(emb.dtype)  # [dc, n·d], blocks oldest … newest
        dc = weight.shape[0]
        per_offset = F.linear(full, weight.view(dc, n, d).transpose(0, 1).reshape(n * dc, d)).view(b, -1, n, dc)
        p = self.pattern.bias.to(emb.dtype) + per_offset[:, :t, 0]
        for i in range(1, n):
            p = p + per_offset[:, i: i + t, i]
        return p

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, past: torch.Tensor | None = None) -> MemoryReadout:
        if self.detach:
            emb, past = emb.detach(), past.detach() if past is not None else None
        p = self.local_pattern(emb, past)
        b, t, dc = p.shape
        out = self.rvq(p.reshape(b * t, dc), mask.reshape(-1))  # padding weighted out, not gathered
        codes = out.codes.view(b, t, -1) * mask[..., None]
        memory = self.lookup(codes)
        if self.from_quantized is not None:
            memory = memory + self.from_quantized(out.quantized.view(b, t, dc).to(memory.dtype))
        recurs = (self.rvq.recurring(self.recur_share)[0][codes[..., 0]] & mask).to(memory.dtype)
        return MemoryReadout(memory=memory * recurs[..., None], codes=codes, loss=out.loss, recurs=recurs)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """m = Σ_l M^l[c^l]: one fused gather-and-sum over all levels."""
        flat = (codes + self.level_offsets).reshape(-1, codes.shape[-1])
        table = self.tables.reshape(-1, self.tables.shape[-1])
        return F.embedding_bag(flat, table, mode="sum").view(*codes.shape[:-1], table.shape[-1])

    def prototypes(self, levels: int = 1) -> torch.Tensor:
        """Memory vectors of the codes of the first `levels` levels: [levels·K, d]."""
        return self.tables[:levels].reshape(-1, self.tables.shape[-1])

    def prototype_mask(self, levels: int = 1) -> torch.Tensor:
        """Which of those prototypes recur (are memory slots): [levels·K] bool."""
        return self.rvq.recurring(self.recur_share)[:levels].reshape(-1)


class MemoryReinjection(nn.Module):
    """Engram-style context gate: a = σ(⟨RMSNorm(h), RMSNorm(W_k m)⟩/√d), h ← h + a·W_v m.

    W_v starts at zero, so the reinjection starts as an exact no-op.
    """

    def __init__(self, d_model: int):
        """Args:
            d_model: width of the hidden state and of the memory vectors.
        """
        super().__init__()
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        nn.init.zeros_(self.value.weight)
        self.h_norm = RMSNorm(d_model)
        self.k_norm = RMSNorm(d_model)

    def prepare(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(RMSNorm(W_k m), W_v m): depends on the memory only, so a looped block computes it once."""
        return self.k_norm(self.key(memory)), self.value(memory)

    def forward(self, h: torch.Tensor, memory: torch.Tensor | None = None,
                prepared: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        key, value = prepared if prepared is not None else self.prepare(memory)
        gate = torch.sigmoid((self.h_norm(h) * key).sum(-1, keepdim=True) / h.shape[-1] ** 0.5)
        return gate * value


def memory_head_keys(proj: nn.Linear, memory: torch.Tensor, n_heads: int) -> torch.Tensor:
    """L2-normalised memory keys per head: [..., d] → [..., H, Dk]."""
    keys = proj(memory)
    return F.normalize(keys.view(*keys.shape[:-1], n_heads, -1), dim=-1)
