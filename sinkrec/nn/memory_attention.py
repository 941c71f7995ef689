"""Sliding-window causal softmax attention with memory key-value slots (spec/sinkrec.md §3.3).

Keys/values of position t: the last `window` positions (t−w, t], their retrieved memory pairs
(k^m_s, v^m_s), and P global prototype slots shared by all users. Computed block by block
(block size = window), so the cost is O(T·(w + P)): linear in sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .basic import at_least_fp32


@dataclass
class WindowCache:
    """The last `window` positions' keys/values (and which of them are real)."""

    tensors: list[torch.Tensor]  # each [B, w, H, dh]
    valid: torch.Tensor  # [B, w] bool


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
        self.memory_kv = nn.Linear(d_model, 2 * d_model) if memory_kv else None
        self.prototype_kv = nn.Linear(d_model, 2 * d_model) if prototype_slots else None
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.n_heads, self.head_dim)

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

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, prototypes: torch.Tensor | None = None,
                cache: WindowCache | None = None) -> tuple[torch.Tensor, WindowCache]:
        """x, memory [B, T, d]; prototypes [P, d] → (y [B, T, d], cache holding the last w positions)."""
        b, t, d = x.shape
        w, h, dh = self.window, self.n_heads, self.head_dim
        q, k, v = (self._heads(z) for z in self.qkv(x).chunk(3, -1))
        current = [k, v]
        if self.memory_kv is not None:
            if memory is None:
                raise ValueError("memory_kv is on but no memory was given")
            current += [self._heads(z) for z in self.memory_kv(memory).chunk(2, -1)]
        if cache is None:
            past = [z.new_zeros(b, w, h, dh) for z in current]
            past_valid = torch.zeros(b, w, dtype=torch.bool, device=x.device)
        else:
            past, past_valid = cache.tensors, cache.valid
        pad = (-t) % w
        nb = (t + pad) // w
        seqs = [torch.cat([p.to(z.dtype), F.pad(z, (0, 0, 0, 0, 0, pad))], 1) for p, z in zip(past, current)]
        valid = torch.cat([past_valid, torch.ones(b, t, dtype=torch.bool, device=x.device),
                           torch.zeros(b, pad, dtype=torch.bool, device=x.device)], 1)
        # block i sees keys at sequence offsets [i·w, i·w + 2w): the previous block and its own
        windows = [self._blocks(z, nb, w) for z in seqs]  # [B, nb, 2w, H, dh]
        key_valid = self._blocks(valid, nb, w)  # [B, nb, 2w]
        qb = F.pad(q, (0, 0, 0, 0, 0, pad)).view(b, nb, w, h, dh)
        rel_q = torch.arange(w, device=x.device)[:, None]
        rel_k = torch.arange(2 * w, device=x.device)[None, :]
        allowed = (rel_k > rel_q) & (rel_k <= rel_q + w)  # key in (t−w, t]
        allowed = allowed[None, None] & key_valid[:, :, None, :]  # [B, nb, w, 2w]

        scale = dh ** -0.5
        scores = [torch.einsum("bnqhd,bnkhd->bnhqk", qb, windows[0]) * scale]
        values = [windows[1]]
        masks = [allowed]
        if self.memory_kv is not None:
            scores.append(torch.einsum("bnqhd,bnkhd->bnhqk", qb, windows[2]) * scale)
            values.append(windows[3])
            masks.append(allowed)
        if self.prototype_kv is not None and prototypes is not None:
            pk, pv = (self._heads(z) for z in self.prototype_kv(prototypes.to(x.dtype)).chunk(2, -1))  # [P, H, dh]
            scores.append(torch.einsum("bnqhd,phd->bnhqp", qb, pk) * scale)
            values.append(pv[None, None].expand(b, nb, -1, h, dh))
            masks.append(torch.ones(b, nb, w, pk.shape[0], dtype=torch.bool, device=x.device))
        logits = at_least_fp32(torch.cat(scores, -1))
        mask = torch.cat(masks, -1)[:, :, None]  # [B, nb, 1, w, K]
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1).to(q.dtype)
        weights = torch.nan_to_num(weights)  # a padded query row has no key at all
        y = torch.einsum("bnhqk,bnkhd->bnqhd", weights, torch.cat(values, 2))
        y = y.reshape(b, nb * w, d)[:, :t]
        new_cache = WindowCache(tensors=[torch.cat([p.to(z.dtype), z], 1)[:, t: t + w] for p, z in zip(past, current)],
                                valid=torch.cat([past_valid, torch.ones(b, t, dtype=torch.bool, device=x.device)],
                                                1)[:, t: t + w])
        return self.out(y), new_cache
