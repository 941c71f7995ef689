"""Gated delta rule: S_t = α_t S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = scale · S_t q_t.

`delta_rule` is the one entry point. It handles padding masks and packed variable-length batches
(`cu_seqlens`) the same way for every implementation, then calls
- `reference`: the step-by-step recurrence (ground truth, float64-capable);
- `chunked`: the chunkwise WY algorithm in PyTorch (CPU and GPU, autograd);
- `triton`: fused GPU kernels, when present (picked by `auto` on CUDA).
"""

from __future__ import annotations

import torch

from .chunked import delta_rule_chunked
from .reference import delta_rule_reference, delta_rule_step
from .sizes import triton_head_sizes_ok

IMPLS = ("auto", "reference", "chunked", "triton")


def _triton_available(x: torch.Tensor) -> bool:
    if not x.is_cuda:
        return False
    try:
        from . import triton_chunk  # noqa: F401
    except ImportError:
        return False
    return True


def _run(impl: str, q, k, v, g, beta, scale, initial_state, chunk_size):
    if impl == "reference":
        return delta_rule_reference(q, k, v, g, beta, scale, initial_state)
    if impl == "chunked":
        return delta_rule_chunked(q, k, v, g, beta, scale, initial_state, chunk_size)
    from .triton_chunk import delta_rule_triton

    if chunk_size != 64:
        raise ValueError(f"the triton delta rule uses chunks of 64 (got chunk_size={chunk_size})")
    return delta_rule_triton(q, k, v, g, beta, scale, initial_state)


def _unpack(x: torch.Tensor, cu: list[int], width: int) -> torch.Tensor:
    """[1, T_total, ...] packed → [N, width, ...] right-padded with zeros."""
    out = x.new_zeros(len(cu) - 1, width, *x.shape[2:])
    for i in range(len(cu) - 1):
        out[i, : cu[i + 1] - cu[i]] = x[0, cu[i]: cu[i + 1]]
    return out


def delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
               scale: float | None = None, initial_state: torch.Tensor | None = None,
               output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, impl: str = "auto", chunk_size: int = 64
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over q, k [B, T, H, Dk], v [B, T, H, Dv], g = log α and β [B, T, H].

    - `scale` defaults to Dk^-½.
    - `mask` [B, T] (True = real step): a padded step neither writes nor decays; its output is 0.
    - `cu_seqlens` [N + 1] with B = 1: N packed sequences; no state crosses their boundaries;
      `initial_state` and the final state are then per sequence, [N, H, Dk, Dv].
    Returns (o [B, T, H, Dv], final state [B or N, H, Dk, Dv] if `output_final_state` else None).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got '{impl}'")
    if q.shape != k.shape or q.shape[:3] != v.shape[:3] or g.shape != q.shape[:3] or beta.shape != g.shape:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
                         f"g {tuple(g.shape)}, beta {tuple(beta.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if impl == "auto":  # one token (streaming): the plain step is cheapest
        fast = _triton_available(q) and triton_head_sizes_ok(q.shape[-1], v.shape[-1])
        impl = "reference" if q.shape[1] == 1 else "triton" if fast else "chunked"
    if cu_seqlens is not None:
        if q.shape[0] != 1:
            raise ValueError("cu_seqlens needs a packed batch with B = 1")
        cu = [int(x) for x in cu_seqlens.tolist()]
        if cu[0] != 0 or cu[-1] != q.shape[1] or any(b < a for a, b in zip(cu, cu[1:])):
            raise ValueError(f"cu_seqlens must rise from 0 to T={q.shape[1]}, got {cu}")
        lengths = torch.tensor([b - a for a, b in zip(cu, cu[1:])], device=q.device)
        width = max(1, int(lengths.max()))
        inner_mask = torch.arange(width, device=q.device)[None, :] < lengths[:, None]
        parts = [_unpack(x, cu, width) for x in (q, k, v, g, beta)]
        o, state = delta_rule(*parts, scale=scale, initial_state=initial_state, output_final_state=True,
                              mask=inner_mask, impl=impl, chunk_size=chunk_size)
        o = torch.cat([o[i, : cu[i + 1] - cu[i]] for i in range(len(cu) - 1)], dim=0)[None]
        return o, (state if output_final_state else None)
    if mask is not None:
        keep = mask[..., None].to(g.dtype)
        g, beta = g * keep, beta * keep
    o, state = _run(impl, q, k, v, g, beta, scale, initial_state, chunk_size)
    if mask is not None:
        o = o * mask[..., None, None].to(o.dtype)
    return o, (state if output_final_state else None)


__all__ = ["delta_rule", "delta_rule_chunked", "delta_rule_reference", "delta_rule_step", "triton_head_sizes_ok"]
