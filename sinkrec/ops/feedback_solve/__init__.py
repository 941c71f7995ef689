"""Sessa's feedback solve: s = (I − B)⁻¹ f with B[t, j] = γ_t softmax_{j<t}(q_t·k_j·scale).

Equivalently s_0 = f_0 and s_t = f_t + γ_t Σ_{j<t} α_{t,j} s_j: every past output feeds the present
through attention weights. `reference` is that recurrence (float64-capable); `dense` builds the
T×T matrix and calls a batched unit-lower-triangular solve, as the paper's code does (in ≥ fp32).
"""

from __future__ import annotations

import torch


def feedback_weights(qb: torch.Tensor, kb: torch.Tensor, scale: float) -> torch.Tensor:
    """α [B, T, T]: softmax over the strict past (row 0 all zeros)."""
    t = qb.shape[1]
    logits = (qb @ kb.transpose(-1, -2)) * scale
    past = torch.ones(t, t, dtype=torch.bool, device=qb.device).tril(-1)
    weights = torch.softmax(logits.masked_fill(~past, float("-inf")), dim=-1)
    return torch.nan_to_num(weights) * past  # row 0 has no past: 0/0 → 0


def feedback_solve_reference(f: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor, gamma: torch.Tensor,
                             scale: float | None = None) -> torch.Tensor:
    """f [B, T, D], qb/kb [B, T, Dq], gamma [B, T] → s [B, T, D], one step at a time."""
    scale = qb.shape[-1] ** -0.5 if scale is None else scale
    outs = [f[:, 0]]
    for t in range(1, f.shape[1]):
        alpha = torch.softmax((kb[:, :t] @ qb[:, t, :, None]).squeeze(-1) * scale, dim=-1)  # [B, t]
        past = torch.stack(outs, 1)
        outs.append(f[:, t] + gamma[:, t, None] * (alpha[:, :, None] * past).sum(1))
    return torch.stack(outs, 1)


def feedback_solve_dense(f: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor, gamma: torch.Tensor,
                         scale: float | None = None) -> torch.Tensor:
    """Same result through one triangular solve of (I − B) s = f; O(T²) memory."""
    scale = qb.shape[-1] ** -0.5 if scale is None else scale
    dtype = f.dtype
    work = torch.promote_types(dtype, torch.float32)
    f, qb, kb, gamma = f.to(work), qb.to(work), kb.to(work), gamma.to(work)
    b_matrix = gamma[..., None] * feedback_weights(qb, kb, scale)
    eye = torch.eye(f.shape[1], dtype=work, device=f.device)
    s = torch.linalg.solve_triangular(eye - b_matrix, f, upper=False, unitriangular=True)
    return s.to(dtype)


def feedback_solve(f, qb, kb, gamma, scale=None, impl: str = "dense") -> torch.Tensor:
    if impl == "dense":
        return feedback_solve_dense(f, qb, kb, gamma, scale)
    if impl == "reference":
        return feedback_solve_reference(f, qb, kb, gamma, scale)
    raise ValueError(f"feedback_solve impl must be 'dense' or 'reference', got '{impl}'")


__all__ = ["feedback_solve", "feedback_solve_dense", "feedback_solve_reference", "feedback_weights"]
