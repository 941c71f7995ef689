"""Gated DeltaNet layer (Yang et al. 2024) on `sinkrec.ops.delta_rule`.

q, k, v come from linear projections through a short causal conv and SiLU; q and k are
L2-normalised per head; β = σ(W_b x); decay g = −exp(A_log)·softplus(W_a x + dt_bias), initialised
as in Mamba-2 / Gated DeltaNet; the output passes a per-head RMSNorm gated by SiLU(W_g x).

A caller can rewrite the per-step inputs before the recurrence (TDGD passes modified β, g, q) via
`modify`, a function of `DeltaInputs` and the layer input. Gates never see the recurrent state, so
the chunked algorithm stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.delta_rule import delta_rule, triton_head_sizes_ok
from .basic import RMSNorm, ShortConv, at_least_fp32


@dataclass
class DeltaInputs:
    q: torch.Tensor  # [B, T, H, Dk], L2-normalised
    k: torch.Tensor  # [B, T, H, Dk], L2-normalised
    v: torch.Tensor  # [B, T, H, Dv]
    g: torch.Tensor  # [B, T, H], log decay ≤ 0
    beta: torch.Tensor  # [B, T, H], write strength in (0, 1)
    decay_input: torch.Tensor | None = None  # W_a x, before `decay` (TDGD adds its time term here)

    def replace(self, **changes: torch.Tensor) -> DeltaInputs:
        return replace(self, **changes)


@dataclass
class DeltaCache:
    """Streaming state of one layer: conv tails and the recurrent state."""

    conv: dict[str, torch.Tensor | None]
    state: torch.Tensor | None = None


Modifier = Callable[[DeltaInputs, torch.Tensor], DeltaInputs]


class Recurrence(nn.Module):
    """The delta-rule recurrence as a submodule (no parameters), so diagnostics can watch its
    inputs with a forward pre-hook instead of the layer keeping them."""

    def __init__(self, *, impl: str = "auto"):
        """Args:
            impl: delta-rule path: auto | chunked | reference | triton.
        """
        super().__init__()
        self.impl = impl

    def forward(self, inputs: DeltaInputs, initial_state: torch.Tensor | None = None,
                output_final_state: bool = False, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = inputs.v.dtype
        return delta_rule(inputs.q, inputs.k.to(dtype), inputs.v, inputs.g.to(dtype), inputs.beta.to(dtype),
                          initial_state=initial_state, output_final_state=output_final_state, mask=mask,
                          impl=self.impl)


class GatedDeltaNet(nn.Module):
    def __init__(self, d_model: int, *, n_heads: int, head_dim: int | None = None, conv_size: int = 4,
                 impl: str = "auto"):
        """Args:
            d_model: width of the input and output.
            n_heads: recurrent heads.
            head_dim: key/value width per head; None: d_model // n_heads.
            conv_size: width of the causal short convolution on q, k, v.
            impl: delta-rule path: auto | chunked | reference | triton.
        """
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim or d_model // n_heads
        if impl == "triton" and not triton_head_sizes_ok(self.head_dim, self.head_dim):
            raise ValueError(f"impl 'triton' needs a head size that is a power of two ≥ 16 (got {self.head_dim}); "
                             "use impl 'auto' or 'chunked', or another n_heads / head_dim")
        inner = n_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.convs = nn.ModuleDict({name: ShortConv(inner, kernel_size=conv_size) for name in ("q", "k", "v")})
        self.b_proj = nn.Linear(d_model, n_heads)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        # Mamba-2 / GDN initialisation: A ~ U(1, 16); dt ~ logU(1e-3, 1e-1), stored as softplus⁻¹(dt).
        self.A_log = nn.Parameter(torch.log(torch.empty(n_heads).uniform_(1, 16)))
        dt = torch.exp(torch.rand(n_heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp_min(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True
        self.g_proj = nn.Linear(d_model, inner, bias=False)
        self.o_norm = RMSNorm(self.head_dim)
        self.o_proj = nn.Linear(inner, d_model, bias=False)
        self.recurrence = Recurrence(impl=impl)

    def decay(self, pre: torch.Tensor) -> torch.Tensor:
        """g = −exp(A_log)·softplus(pre + dt_bias), pre [B, T, H] (TDGD adds its time term to pre)."""
        pre = at_least_fp32(pre)
        return -self.A_log.to(pre.dtype).exp() * F.softplus(pre + self.dt_bias.to(pre.dtype))

    def project(self, x: torch.Tensor, cache: DeltaCache | None = None) -> DeltaInputs:
        b, t, _ = x.shape
        h, d = self.n_heads, self.head_dim
        parts = {}
        for name, proj in (("q", self.q_proj), ("k", self.k_proj), ("v", self.v_proj)):
            past = cache.conv.get(name) if cache is not None else None
            y, tail = self.convs[name](proj(x), past)
            if cache is not None:
                cache.conv[name] = tail
            parts[name] = y.view(b, t, h, d)
        pre = self.a_proj(x)
        return DeltaInputs(q=F.normalize(parts["q"], dim=-1), k=F.normalize(parts["k"], dim=-1), v=parts["v"],
                           g=self.decay(pre), beta=torch.sigmoid(at_least_fp32(self.b_proj(x))), decay_input=pre)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: DeltaCache | None = None,
                modify: Modifier | None = None) -> torch.Tensor:
        """x [B, T, d] → [B, T, d]; with `cache`, continues from and updates the streaming state."""
        b, t, _ = x.shape
        inputs = self.project(x, cache)
        if modify is not None:
            inputs = modify(inputs, x)
        o, state = self.recurrence(inputs, cache.state if cache is not None else None, cache is not None, mask)
        if cache is not None:
            cache.state = state
        o = self.o_norm(o) * F.silu(self.g_proj(x).view(b, t, self.n_heads, self.head_dim))
        return self.o_proj(o.reshape(b, t, -1))

    def new_cache(self) -> DeltaCache:
        return DeltaCache(conv={"q": None, "k": None, "v": None})
