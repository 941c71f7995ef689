"""Sessa's feedback solve: s = (I − B)⁻¹ f with B[t, j] = γ_t softmax_{j<t}(q_t·k_j·scale).

Equivalently s_0 = f_0 and s_t = f_t + γ_t Σ_{j<t} α_{t,j} s_j: every past output feeds the present
through attention weights. `feedback_solve` is the one entry point; its implementations:
- `reference`: the step-by-step recurrence (ground truth, float64-capable);
- `dense`: builds the T×T matrix and calls a batched unit-lower-triangular solve, as the paper's code
  does (in ≥ fp32; O(T²) memory);
- `blocked`: no T×T matrix, memory linear in T (flash-style normaliser pass, leaf inverses, blocked
  forward substitution, a custom backward that solves the transposed system the same way), in PyTorch;
- `triton`: the same algorithm with its attention-style products in Triton kernels (CUDA, fp32/bf16/fp16);
- `auto`: dense up to AUTO_DENSE_MAX_T steps, then triton on CUDA (when importable), else blocked.
"""

from __future__ import annotations

import torch

from .blocked import feedback_solve_blocked
from .reference import feedback_solve_dense, feedback_solve_reference, feedback_weights

IMPLS = ("auto", "reference", "dense", "blocked", "triton")
AUTO_DENSE_MAX_T = 2048


def _triton_available(x: torch.Tensor) -> bool:
    if not x.is_cuda or x.dtype == torch.float64:
        return False
    try:
        from . import triton_kernels  # noqa: F401
    except ImportError:
        return False
    return True


def feedback_solve(f: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor, gamma: torch.Tensor,
                   scale: float | None = None, impl: str = "auto") -> torch.Tensor:
    """f [B, T, D], qb/kb [B, T, Dq], gamma [B, T] → s [B, T, D] (scale defaults to Dq^-½)."""
    if impl not in IMPLS:
        raise ValueError(f"feedback_solve impl must be one of {IMPLS}, got '{impl}'")
    if f.shape[:2] != qb.shape[:2] or qb.shape != kb.shape or gamma.shape != f.shape[:2]:
        raise ValueError(f"shape mismatch: f {tuple(f.shape)}, qb {tuple(qb.shape)}, kb {tuple(kb.shape)}, "
                         f"gamma {tuple(gamma.shape)}")
    if impl == "auto":
        if f.shape[1] <= AUTO_DENSE_MAX_T:
            impl = "dense"
        else:
            impl = "triton" if _triton_available(f) else "blocked"
    if impl == "dense":
        return feedback_solve_dense(f, qb, kb, gamma, scale)
    if impl == "reference":
        return feedback_solve_reference(f, qb, kb, gamma, scale)
    if impl == "blocked":
        return feedback_solve_blocked(f, qb, kb, gamma, scale)
    from .triton_kernels import feedback_solve_triton

    return feedback_solve_triton(f, qb, kb, gamma, scale)


__all__ = ["IMPLS", "feedback_solve", "feedback_solve_blocked", "feedback_solve_dense", "feedback_solve_reference",
           "feedback_weights"]
