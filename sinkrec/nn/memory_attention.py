"""Sliding-window causal softmax attention with memory key-value slots (spec/sinkrec.md §3.3).

Two softmax attentions, summed:
- the window: position t attends to the last `window` positions (t−w, t] — exactly the attention of
  SinkRec without memory;
- the memory: position t attends to the retrieved memory pairs (k^m_s, v^m_s) of the window positions
  whose pattern recurs, to the P global prototype slots of recurring codes, and to a null slot (zero
  key and value: attending to no memory). Its value projection starts at zero, so at
  initialisation the memory adds exactly nothing.
Both are computed block by block (block size = window) with `scaled_dot_product_attention`, so the
cost is O(T·(w + P)): linear in sequence length; a short sequence without cache (T ≤ 4w) takes one
dense banded call instead, the same attention without the block copies. The memory pairs depend only on the memory, so a
looped block projects them once (`prepare`) and reuses them in every loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .memory import own_rng


@dataclass
class WindowCache:
    """The last `window` positions' keys/values (and which of them are real)."""

    tensors: list[torch.Tensor]  # each [B, w, H, dh]: k, v (then memory k, v)
    valid: torch.Tensor  # [B, w] bool
    memory_valid: torch.Tensor | None = None  # [B, w] bool: real positions whose pattern recurs


@dataclass
class MemorySlots:
    """The memory's keys/values for the attention, projected once per forward (`MemoryAttention.prepare`)."""

    keys: torch.Tensor | None  # [B, T, H, dh] per-position memory keys (None: memory_kv off)
    values: torch.Tensor | None
    valid: torch.Tensor  # [B, T] bool: positions whose pattern recurs
    proto_keys: torch.Tensor | None  # [P, H, dh] (None: no prototype slots)
    proto_values: torch.Tensor | None
    proto_valid: torch.Tensor | None  # [P] bool: prototypes of recurring codes


class MemoryAttention(nn.Module):
    def __init__(self, d_model: int, *, n_heads: int, window: int = 64, memory_kv: bool = True,
                 prototype_slots: bool = True):
        """Args:
            d_model: width of the input, output and memory vectors.
            n_heads: attention heads (must divide d_model).
            window: w: each position attends to the last w positions (and their memory pairs).
            memory_kv: add a key/value pair from each position's memory vector.
            prototype_slots: add global key/value slots from the memory prototypes.
        """
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by attention heads {n_heads}")
        self.n_heads, self.head_dim, self.window = n_heads, d_model // n_heads, window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        with own_rng():  # memory parameters leave the shared ones' initial values unchanged
            self.memory_kv = nn.Linear(d_model, 2 * d_model) if memory_kv else None
            self.prototype_kv = nn.Linear(d_model, 2 * d_model) if prototype_slots else None
        for proj in (self.memory_kv, self.prototype_kv):
            if proj is not None:  # value half at zero: the memory branch starts as an exact no-op
                nn.init.zeros_(proj.weight[d_model:])
                nn.init.zeros_(proj.bias[d_model:])
        self.out = nn.Linear(d_model, d_model)

    @property
    def uses_memory(self) -> bool:
        return self.memory_kv is not None or self.prototype_kv is not None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.n_heads, self.head_dim)

    def prepare(self, memory: torch.Tensor | None, recurs: torch.Tensor | None, prototypes: torch.Tensor | None,
                proto_valid: torch.Tensor | None, dtype: torch.dtype) -> MemorySlots | None:
        """Project the memory (per position [B, T, d]) and the prototypes ([P, d]) to key/value slots."""
        if not self.uses_memory:
            return None
        keys = values = pk = pv = None
        if self.memory_kv is not None:
            if memory is None:
                raise ValueError("memory_kv is on but no memory was given")
            keys, values = (self._heads(z) for z in self.memory_kv(memory.to(dtype)).chunk(2, -1))
        if self.prototype_kv is not None and prototypes is not None:
            pk, pv = (self._heads(z) for z in self.prototype_kv(prototypes.to(dtype)).chunk(2, -1))
        valid = recurs > 0 if recurs is not None else torch.ones(memory.shape[:2], dtype=torch.bool,
                                                                  device=memory.device)
        return MemorySlots(keys, values, valid, pk, pv, proto_valid if pk is not None else None)

    @staticmethod
    def _blocks(seq: torch.Tensor, nb: int, w: int) -> torch.Tensor:
        """[B, (nb + 1)·w, ...] → [B, nb, 2w, ...]: block i = positions [i·w, i·w + 2w).

        Built from two reshaped views rather than `unfold` (overlapping windows), whose backward
        torch.compile's CPU code generation corrupts memory on.
        """
        rest = seq.shape[2:]
        before = seq[:, : nb * w].reshape(seq.shape[0], nb, w, *rest)
        own = seq[:, w:].reshape(seq.shape[0], nb, w, *rest)
        return torch.cat([before, own], 2)

    def _kv(self, z: torch.Tensor, past: torch.Tensor | None, nb: int, pad: int) -> torch.Tensor:
        """[B, T, H, dh] (+ past [B, w, H, dh]) → key/value blocks [B·nb, H, 2w, dh]."""
        w = self.window
        seq = F.pad(z, (0, 0, 0, 0, w, pad)) if past is None else F.pad(torch.cat([past.to(z.dtype), z], 1),
                                                                        (0, 0, 0, 0, 0, pad))
        blocks = self._blocks(seq, nb, w)  # [B, nb, 2w, H, dh]
        return blocks.permute(0, 1, 3, 2, 4).reshape(-1, self.n_heads, 2 * w, self.head_dim)

    def _dense(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: MemorySlots | None) -> torch.Tensor:
        """The same two attentions over a whole short sequence: one banded mask, no blocks."""
        b, t, h, dh = q.shape
        pos = torch.arange(t, device=q.device)
        band = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - self.window)  # [T, T]
        qh = q.transpose(1, 2)
        y = F.scaled_dot_product_attention(qh, k.transpose(1, 2), v.transpose(1, 2), attn_mask=band)
        if slots is not None:
            keys, values, masks = [], [], []
            if slots.keys is not None:
                keys.append(slots.keys.to(q.dtype).transpose(1, 2))
                values.append(slots.values.to(q.dtype).transpose(1, 2))
                masks.append(band & slots.valid[:, None, None, :])
            if slots.proto_keys is not None:
                p = slots.proto_keys.shape[0]
                keys.append(slots.proto_keys.to(q.dtype).transpose(0, 1)[None].expand(b, h, p, dh))
                values.append(slots.proto_values.to(q.dtype).transpose(0, 1)[None].expand(b, h, p, dh))
                masks.append(slots.proto_valid.view(1, 1, 1, p).expand(b, 1, t, p))
            keys.append(qh.new_zeros(b, h, 1, dh))  # the null slot
            values.append(qh.new_zeros(b, h, 1, dh))
            masks.append(torch.ones(b, 1, t, 1, dtype=torch.bool, device=q.device))
            y = y + F.scaled_dot_product_attention(qh, torch.cat(keys, 2), torch.cat(values, 2),
                                                   attn_mask=torch.cat([m.expand(b, 1, t, -1) for m in masks], -1))
        return y.transpose(1, 2).reshape(b, t, h * dh)

    def forward(self, x: torch.Tensor, slots: MemorySlots | None = None, cache: WindowCache | None = None,
                keep: bool = True) -> tuple[torch.Tensor, WindowCache | None]:
        """x [B, T, d]; memory slots from `prepare` → (y [B, T, d], cache holding the last w positions;
        None unless `keep`)."""
        b, t, d = x.shape
        w, h, dh = self.window, self.n_heads, self.head_dim
        q, k, v = (self._heads(z) for z in self.qkv(x).chunk(3, -1))
        if cache is None and not keep and t <= 4 * w:
            return self.out(self._dense(q, k, v, slots)), None
        pad = (-t) % w
        nb = (t + pad) // w
        past = cache.tensors if cache is not None else [None] * 4
        now = torch.ones(b, t, dtype=torch.bool, device=x.device)
        past_valid = cache.valid if cache is not None else torch.zeros(b, w, dtype=torch.bool, device=x.device)
        tail = torch.zeros(b, pad, dtype=torch.bool, device=x.device)
        rel_q = torch.arange(w, device=x.device)[:, None]
        rel_k = torch.arange(2 * w, device=x.device)[None, :]
        band = (rel_k > rel_q) & (rel_k <= rel_q + w)  # key in (t−w, t]

        def block_mask(valid: torch.Tensor) -> torch.Tensor:  # [B, (nb+1)w] → [B·nb, 1, w, 2w]
            return (band & self._blocks(valid, nb, w)[:, :, None, :]).reshape(b * nb, 1, w, 2 * w)

        qb = F.pad(q, (0, 0, 0, 0, 0, pad)).view(b, nb, w, h, dh).transpose(2, 3).reshape(b * nb, h, w, dh)
        y = F.scaled_dot_product_attention(qb, self._kv(k, past[0], nb, pad), self._kv(v, past[1], nb, pad),
                                           attn_mask=block_mask(torch.cat([past_valid, now, tail], 1)))
        current, memory_valid = [k, v], None
        if slots is not None:
            keys, values, masks = [], [], []
            if slots.keys is not None:
                past_mem = cache.memory_valid if cache is not None and cache.memory_valid is not None else \
                    torch.zeros(b, w, dtype=torch.bool, device=x.device)
                if keep:  # only the returned cache needs it
                    memory_valid = torch.cat([past_mem, slots.valid], 1)[:, t: t + w]
                keys.append(self._kv(slots.keys.to(q.dtype), past[2], nb, pad))
                values.append(self._kv(slots.values.to(q.dtype), past[3], nb, pad))
                masks.append(block_mask(torch.cat([past_mem, slots.valid, tail], 1)))
                current += [slots.keys, slots.values]
            if slots.proto_keys is not None:
                p = slots.proto_keys.shape[0]
                keys.append(slots.proto_keys.to(q.dtype).transpose(0, 1)[None].expand(b * nb, h, p, dh))
                values.append(slots.proto_values.to(q.dtype).transpose(0, 1)[None].expand(b * nb, h, p, dh))
                masks.append(slots.proto_valid.view(1, 1, 1, p).expand(b * nb, 1, w, p))
            keys.append(qb.new_zeros(b * nb, h, 1, dh))  # the null slot: attend to no memory
            values.append(qb.new_zeros(b * nb, h, 1, dh))
            masks.append(torch.ones(b * nb, 1, w, 1, dtype=torch.bool, device=x.device))
            y = y + F.scaled_dot_product_attention(qb, torch.cat(keys, 2), torch.cat(values, 2),
                                                   attn_mask=torch.cat(masks, -1))
        y = self.out(y.view(b, nb, h, w, dh).transpose(2, 3).reshape(b, nb * w, d)[:, :t])
        if not keep:
            return y, None
        zeros = [x.new_zeros(b, w, h, dh)] * len(current)
        new_cache = WindowCache(
            tensors=[torch.cat([(p if p is not None else z0).to(z.dtype), z], 1)[:, t: t + w]
                     for p, z0, z in zip(past, zeros, current)],
            valid=torch.cat([past_valid, now], 1)[:, t: t + w], memory_valid=memory_valid)
        return y, new_cache
