"""Ground truths of the feedback solve: the step-by-step recurrence and the dense T×T triangular solve."""

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
