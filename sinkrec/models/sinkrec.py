"""SinkRec (spec/sinkrec.md §3): RVQ conditional memory + memory attention + TDGD, looped.

One block = memory reinjection → memory attention → TDGD → SwiGLU FFN (each pre-norm residual),
applied `loops` times with shared weights, optionally stacked `n_blocks` times. The memory is read
once from the item embeddings (codes depend only on the local pattern of items). Every component
has a switch (spec §3.6); all switches off gives a plain Gated DeltaNet.

Every memory path starts as an exact no-op (zero reinjection values, λ = 0, coverage 0, zero memory
values in the attention) and memory parameters draw from their own random stream, so an untrained
SinkRec computes exactly what SinkRec without memory computes, seed for seed. Projections of the
memory are made once per forward and shared by a block's loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..batch import Batch
from ..checks import DROPOUT, OptionError, above, at_least, divides, heads_fit, one_of, option
from ..nn.basic import RMSNorm, SwiGLU
from ..nn.gated_deltanet import DeltaCache
from ..nn.memory import ConditionalMemory, MemoryOptions, MemoryReadout, MemoryReinjection, own_rng
from ..nn.memory_attention import MemoryAttention, WindowCache
from ..nn.tdgd import TDGD, TDGDOptions
from ..ops.delta_rule import IMPLS
from .base import Encoded, SequentialRecommender


@dataclass
class SinkRecConfig(MemoryOptions, TDGDOptions):
    """SinkRec's options: its own below, plus the memory's (MemoryOptions) and TDGD's (TDGDOptions)."""

    d_model: int = option(64, at_least(1))  # width of embeddings and hidden states
    n_heads: int = option(2, at_least(1))  # TDGD heads
    head_dim: int = option(0, at_least(0))  # 0: d_model / n_heads (then n_heads must divide d_model)
    n_blocks: int = option(1, at_least(1))  # distinct stacked blocks
    loops: int = option(2, at_least(1))  # R: applications of each block with shared weights (1 = no-loop ablation)
    dropout: float = option(0.2, DROPOUT)  # dropout on embeddings, residual branches and the FFN
    ffn_mult: float = option(4.0, above(0))  # SwiGLU hidden width ≈ ffn_mult·d·2/3
    conv_size: int = option(4, at_least(1))  # causal short conv width on q, k, v
    impl: str = option("auto", one_of(*IMPLS))  # delta-rule path: auto | chunked | reference | triton
    use_memory: bool = True  # the RVQ conditional memory (off: no memory anywhere)
    reinject: bool = True  # memory reinjection gate before attention
    vq_weight: float = option(1.0, at_least(0))  # λ_vq: weight of the VQ loss in the training loss
    use_attention: bool = True  # the sliding-window memory attention block
    attn_heads: int = option(2, at_least(1))  # heads of the memory attention (must divide d_model)
    window: int = option(64, at_least(1))  # attention window w
    attn_memory_kv: bool = True  # memory key/value pair per position in the attention
    prototype_levels: int = option(1, at_least(0))  # prototype slots = codes of the first N levels (0: none)
    time_unit: float = option(3600.0, above(0))  # seconds per unit of the gap feature δ = log1p(gap / unit)
    embed_scale: bool = True  # scale item embeddings by √d_model before the blocks (false: h⁰ = E[x])

    def check(self) -> None:
        heads_fit(self)
        if self.use_attention:
            divides(self, "attn_heads", "d_model")
        if self.prototype_levels > self.rvq_levels:
            raise OptionError("prototype_levels", f"must be ≤ rvq_levels ({self.rvq_levels}), "
                                                  f"got {self.prototype_levels}")


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
    recurs: torch.Tensor | None = None  # [B, T] 1 where the position's pattern recurs (memory-covered)
    proto_valid: torch.Tensor | None = None  # [P] bool: prototypes of recurring codes


class SinkBlock(nn.Module):
    """Reinjection → memory attention → TDGD → SwiGLU, each a pre-norm residual; switches from `o`."""

    def __init__(self, o: SinkRecConfig):
        super().__init__()
        d, memory = o.d_model, o.use_memory
        with own_rng():
            self.reinject = MemoryReinjection(d) if memory and o.reinject else None
        self.attn_norm = RMSNorm(d) if o.use_attention else None
        self.attn = MemoryAttention(d, n_heads=o.attn_heads, window=o.window, memory_kv=memory and o.attn_memory_kv,
                                    prototype_slots=memory and o.prototype_levels > 0) if o.use_attention else None
        self.tdgd_norm = RMSNorm(d)
        self.tdgd = TDGD(d, n_heads=o.n_heads, head_dim=o.head_dim or None, conv_size=o.conv_size, impl=o.impl,
                         options=o, use_memory=memory)
        self.ffn_norm = RMSNorm(d)
        self.ffn = SwiGLU(d, ffn_mult=o.ffn_mult, dropout=o.dropout)
        self.drop = nn.Dropout(o.dropout)

    def prepare(self, ctx: Context) -> dict:
        """Projections of the memory alone: computed once per forward, shared by the block's loops."""
        if ctx.memory is None:
            return {}
        return {"reinject": self.reinject.prepare(ctx.memory) if self.reinject is not None else None,
                "slots": self.attn.prepare(ctx.memory, ctx.recurs, ctx.prototypes, ctx.proto_valid, ctx.memory.dtype)
                if self.attn is not None else None,
                "keys": self.tdgd.prepare(ctx.memory)}

    def forward(self, x: torch.Tensor, ctx: Context, cache: dict | None = None, prepared: dict | None = None
                ) -> torch.Tensor:
        prepared = self.prepare(ctx) if prepared is None else prepared
        if self.reinject is not None:
            x = x + self.drop(self.reinject(x, prepared=prepared["reinject"]))
        if self.attn is not None:
            y, window = self.attn(self.attn_norm(x), prepared.get("slots"),
                                  cache.get("attn") if cache is not None else None, keep=cache is not None)
            if cache is not None:
                cache["attn"] = window
            x = x + self.drop(y)
        x = x + self.drop(self.tdgd(self.tdgd_norm(x), ctx.delta, ctx.memory, ctx.mask,
                                    cache["tdgd"] if cache is not None else None, recurs=ctx.recurs,
                                    memory_keys=prepared.get("keys")))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


@dataclass
class SinkRecCache:
    blocks: list[dict]  # per (block, loop): {"attn": WindowCache | None, "tdgd": DeltaCache}
    emb_tail: torch.Tensor | None = None  # last n−1 embeddings (local pattern)
    last_time: torch.Tensor | None = None
    steps: int = 0


class SinkRec(SequentialRecommender):
    supports_streaming = True

    def __init__(self, n_items: int, max_len: int, options: SinkRecConfig):
        super().__init__(n_items, options.d_model)
        o = self.options = options
        with own_rng():
            self.memory = ConditionalMemory(o.d_model, options=o) if o.use_memory else None
        self.blocks = nn.ModuleList(SinkBlock(o) for _ in range(o.n_blocks))
        self.drop = nn.Dropout(o.dropout)
        self.norm = RMSNorm(o.d_model)

    def _context(self, emb: torch.Tensor, items: torch.Tensor, timestamps: torch.Tensor | None,
                 cache: SinkRecCache | None) -> tuple[Context, MemoryReadout | None]:
        o = self.options
        mask = items > 0
        readout = prototypes = proto_valid = None
        if self.memory is not None:
            readout = self.memory(emb, mask, cache.emb_tail if cache is not None else None)
            if o.prototype_levels > 0:
                prototypes = self.memory.prototypes(o.prototype_levels)
                proto_valid = self.memory.prototype_mask(o.prototype_levels)
        previous = None
        if cache is not None and cache.steps > 0:
            previous = cache.last_time if timestamps is not None else torch.zeros(items.shape[0], device=items.device)
        delta = time_gaps(timestamps, items, o.time_unit, previous) if o.temporal else torch.zeros_like(
            items, dtype=torch.float)
        memory = readout.memory if readout is not None else None
        recurs = readout.recurs if readout is not None else None
        return Context(memory, prototypes, delta, mask if cache is None else None, recurs, proto_valid), readout

    def _run(self, items: torch.Tensor, timestamps: torch.Tensor | None, cache: SinkRecCache | None
             ) -> tuple[torch.Tensor, MemoryReadout | None]:
        emb = self.item_embedding(items)
        if self.options.embed_scale:
            emb = emb * self.d_model ** 0.5
        ctx, readout = self._context(emb, items, timestamps, cache)
        x = self.drop(emb)
        slot = 0
        for block in self.blocks:
            prepared = block.prepare(ctx)  # the memory is read once per block, not once per loop
            for _ in range(self.options.loops):
                x = block(x, ctx, cache.blocks[slot] if cache is not None else None, prepared)
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
        return self.norm(x), readout

    def encode(self, batch: Batch) -> Encoded:
        hidden, readout = self._run(batch.items, batch.timestamps, None)
        if readout is None:
            return Encoded(hidden)
        return Encoded(hidden, losses={"vq": self.options.vq_weight * readout.loss}, codes=readout.codes)

    def epoch_stats(self) -> dict[str, float]:
        return self.memory.rvq.usage_stats(recur_share=self.options.recur_share) if self.memory is not None else {}

    # ---- streaming -------------------------------------------------------------------------
    def new_cache(self) -> SinkRecCache:
        slots = self.options.n_blocks * self.options.loops
        return SinkRecCache(blocks=[{"attn": None, "tdgd": DeltaCache(conv={"q": None, "k": None, "v": None})}
                                    for _ in range(slots)])

    def encode_step(self, items: torch.Tensor, cache: SinkRecCache, timestamps: torch.Tensor | None = None
                    ) -> torch.Tensor:
        return self._run(items, timestamps, cache)[0]


__all__ = ["SinkRec", "SinkRecConfig", "WindowCache", "time_gaps"]
