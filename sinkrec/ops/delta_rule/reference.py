"""The gated delta rule, step by step: the ground truth every fast path is tested against.

State h ∈ R^{Dk × Dv} per head (the transpose of S in S_t = α_t S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ):
    h_t = α_t (I − β_t k_t k_tᵀ) h_{t−1} + β_t k_t v_tᵀ,     o_t = scale · h_tᵀ q_t,     α_t = exp(g_t).
"""

from __future__ import annotations

import torch


def delta_rule_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                    state: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One token for every (batch, head): q, k [B, H, Dk], v [B, H, Dv], g, beta [B, H], state [B, H, Dk, Dv]."""
    state = state * g.exp()[..., None, None]
    kv = torch.einsum("bhk,bhkv->bhv", k, state)  # current read-out at key k: kᵀ h
    state = state + torch.einsum("bhk,bhv->bhkv", k, beta[..., None] * (v - kv))
    out = torch.einsum("bhk,bhkv->bhv", q * scale, state)
    return out, state


def delta_rule_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                         scale: float, initial_state: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense batch: q, k [B, T, H, Dk], v [B, T, H, Dv], g, beta [B, T, H] → (o [B, T, H, Dv], h_T)."""
    b, t, h, dk = k.shape
    state = (initial_state if initial_state is not None
             else q.new_zeros(b, h, dk, v.shape[-1]))
    outs = []
    for step in range(t):
        out, state = delta_rule_step(q[:, step], k[:, step], v[:, step], g[:, step], beta[:, step], state, scale)
        outs.append(out)
    return torch.stack(outs, dim=1), state
