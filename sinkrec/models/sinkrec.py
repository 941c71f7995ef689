"""SinkRec (spec/sinkrec.md §3): RVQ conditional memory + memory attention + TDGD, looped.

One block = memory reinjection → memory attention → TDGD → SwiGLU FFN (each pre-norm residual),
applied `loops` times with shared weights, optionally stacked `n_blocks` times. The memory is read
once from the item embeddings (codes depend only on the local pattern of items). Every component
has a switch (spec §3.6); all switches off gives a plain Gated DeltaNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..data.batching import Batch
from ..nn.basic import RMSNorm, SwiGLU
from ..nn.gated_deltanet import DeltaCache
from ..nn.memory import ConditionalMemory, MemoryReinjection
from ..nn.memory_attention import MemoryAttention, WindowCache
from ..nn.tdgd import TDGD, TDGDOptions
from .base import SequentialRecommender
from .registry import register


@dataclass
class SinkRecConfig:
    d_model: int = 64
    n_heads: int = 2  # TDGD heads
    head_dim: int = 0  # 0: d_model / n_heads
    n_blocks: int = 1  # distinct stacked blocks
    loops: int = 2  # R: applications of each block with shared weights (1 = no-loop ablation)
    dropout: float = 0.2
    ffn_mult: float = 4.0
    conv_size: int = 4
    impl: str = "auto"
    # conditional memory
    use_memory: bool = True
    reinject: bool = True
    pattern_len: int = 3
    rvq_levels: int = 3
    rvq_codes: int = 256
    code_dim: int = 32
    rvq_mode: str = "ema"  # ema (dead-code restart) | grad (codebook + commitment losses)
    rvq_decay: float = 0.99
    rvq_dead_threshold: float = 0.05
    commitment: float = 0.25
    kmeans_init: bool = True
    quantized_to_memory: bool = True
    vq_weight: float = 1.0  # λ_vq
    # attention block
    use_attention: bool = True
    attn_heads: int = 2
    window: int = 64
    attn_memory_kv: bool = True
    prototype_levels: int = 1  # prototype slots = codes of the first N levels (0: none)
    # TDGD
    temporal: bool = True
    time_unit: float = 3600.0  # seconds per unit of the gap feature δ = log1p(gap / unit)
    write_suppression: bool = True
    decay_suppression: bool = True
    diff_readout: bool = True
    lambda_max: float = 0.5
    coverage_scale: float = 5.0
    coverage_bias: float = -3.0


def time_gaps(timestamps: torch.Tensor | None, items: torch.Tensor, unit: float,
              previous: torch.Tensor | None = None) -> torch.Tensor:
    """δ_t = log1p(max(τ_t − τ_{t−1}, 0) / unit); 0 for a first event; one unit per step without times."""
    b, t = items.shape
    if timestamps is None:
        delta = torch.full((b, t), math.log1p(1.0), device=items.device)
        if previous is None:
            delta[:, 0] = 0.0
        return delta
    before = torch.cat([timestamps[:, :1] if previous is None else previous[:, None], timestamps[:, :-1]], 1)
    return torch.log1p((timestamps - before).clamp_min(0) / unit).float()


@dataclass
class Context:
    memory: torch.Tensor | None
    prototypes: torch.Tensor | None
    delta: torch.Tensor
    mask: torch.Tensor | None


class SinkBlock(nn.Module):
    def __init__(self, o: SinkRecConfig):
        super().__init__()
        d = o.d_model
        self.reinject = MemoryReinjection(d) if o.use_memory and o.reinject else None
        self.attn_norm = RMSNorm(d) if o.use_attention else None
        self.attn = MemoryAttention(d, o.attn_heads, o.window, o.use_memory and o.attn_memory_kv,
                                    o.use_memory and o.prototype_levels > 0) if o.use_attention else None
        self.tdgd_norm = RMSNorm(d)
        tdgd_opts = TDGDOptions(o.temporal, o.write_suppression, o.decay_suppression, o.diff_readout,
                                o.lambda_max, o.coverage_scale, o.coverage_bias)
        self.tdgd = TDGD(d, o.n_heads, o.head_dim or None, o.conv_size, o.impl, tdgd_opts, o.use_memory)
        self.ffn_norm = RMSNorm(d)
        self.ffn = SwiGLU(d, o.ffn_mult, o.dropout)
        self.drop = nn.Dropout(o.dropout)

    def forward(self, x: torch.Tensor, ctx: Context, cache: dict | None = None) -> torch.Tensor:
        if self.reinject is not None:
            x = x + self.drop(self.reinject(x, ctx.memory))
        if self.attn is not None:
            y, window = self.attn(self.attn_norm(x), ctx.memory, ctx.prototypes,
                                  cache.get("attn") if cache is not None else None)
            if cache is not None:
                cache["attn"] = window
            x = x + self.drop(y)
        x = x + self.drop(self.tdgd(self.tdgd_norm(x), ctx.delta, ctx.memory, ctx.mask,
                                    cache["tdgd"] if cache is not None else None))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


@dataclass
class SinkRecCache:
    blocks: list[dict]  # per (block, loop): {"attn": WindowCache | None, "tdgd": DeltaCache}
    emb_tail: torch.Tensor | None = None  # last n−1 embeddings (local pattern)
    last_time: torch.Tensor | None = None
    steps: int = 0


@register("sinkrec", SinkRecConfig)
class SinkRec(SequentialRecommender):
    supports_streaming = True

    def __init__(self, n_items: int, max_len: int, options: SinkRecConfig):
        super().__init__(n_items, options.d_model)
        o = self.options = options
        self.memory = (ConditionalMemory(o.d_model, o.pattern_len, o.rvq_levels, o.rvq_codes, o.code_dim,
                                         o.rvq_mode, o.commitment, o.kmeans_init, o.quantized_to_memory,
                                         o.rvq_decay, o.rvq_dead_threshold) if o.use_memory else None)
        self.blocks = nn.ModuleList(SinkBlock(o) for _ in range(o.n_blocks))
        self.drop = nn.Dropout(o.dropout)
        self.norm = RMSNorm(o.d_model)
        self._vq_loss: torch.Tensor | None = None
        self.last_codes: torch.Tensor | None = None

    def _context(self, emb: torch.Tensor, items: torch.Tensor, timestamps: torch.Tensor | None,
                 cache: SinkRecCache | None) -> Context:
        o = self.options
        mask = items > 0
        memory = prototypes = None
        if self.memory is not None:
            readout = self.memory(emb, mask, cache.emb_tail if cache is not None else None)
            memory, self._vq_loss, self.last_codes = readout.memory, readout.loss, readout.codes
            if o.prototype_levels > 0:
                prototypes = self.memory.prototypes(o.prototype_levels)
        previous = None
        if cache is not None and cache.steps > 0:
            previous = cache.last_time if timestamps is not None else torch.zeros(items.shape[0], device=items.device)
        delta = time_gaps(timestamps, items, o.time_unit, previous) if o.temporal else torch.zeros_like(
            items, dtype=torch.float)
        return Context(memory, prototypes, delta, mask if cache is None else None)

    def _run(self, items: torch.Tensor, timestamps: torch.Tensor | None, cache: SinkRecCache | None) -> torch.Tensor:
        emb = self.item_embedding(items) * self.d_model ** 0.5
        ctx = self._context(emb, items, timestamps, cache)
        x = self.drop(emb)
        slot = 0
        for block in self.blocks:
            for _ in range(self.options.loops):
                x = block(x, ctx, cache.blocks[slot] if cache is not None else None)
                slot += 1
        if cache is not None:
            n = self.options.pattern_len - 1
            if n > 0 and self.memory is not None:
                tail = emb if cache.emb_tail is None else torch.cat([cache.emb_tail, emb], 1)
                cache.emb_tail = tail[:, -n:] if tail.shape[1] >= n else torch.cat(
                    [tail.new_zeros(tail.shape[0], n - tail.shape[1], tail.shape[2]), tail], 1)
            if timestamps is not None:
                cache.last_time = timestamps[:, -1]
            cache.steps += items.shape[1]
        return self.norm(x)

    def encode(self, batch: Batch) -> torch.Tensor:
        return self._run(batch.items, batch.timestamps, None)

    def extra_losses(self) -> dict[str, torch.Tensor]:
        if self.memory is None or self._vq_loss is None or not self.training:
            return {}
        return {"vq": self.options.vq_weight * self._vq_loss}

    def epoch_stats(self) -> dict[str, float]:
        return self.memory.rvq.usage_stats() if self.memory is not None else {}

    # ---- streaming -------------------------------------------------------------------------
    def new_cache(self) -> SinkRecCache:
        slots = self.options.n_blocks * self.options.loops
        return SinkRecCache(blocks=[{"attn": None, "tdgd": DeltaCache(conv={"q": None, "k": None, "v": None})}
                                    for _ in range(slots)])

    def encode_step(self, items: torch.Tensor, cache: SinkRecCache, timestamps: torch.Tensor | None = None
                    ) -> torch.Tensor:
        return self._run(items, timestamps, cache)


__all__ = ["SinkRec", "SinkRecConfig", "WindowCache", "time_gaps"]
