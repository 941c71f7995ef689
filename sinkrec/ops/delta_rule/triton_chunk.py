"""The chunked gated delta rule on Triton kernels (triton_kernels.py), with its own backward.

Seven launches per forward+backward, no T×T or per-chunk Python loops: kernels parallel over all
chunks and one sequential state pass each way. fp32 and bf16/fp16 inputs (fp32 accumulation and
state; the products are picked by `_dot`); float64 goes to the PyTorch chunked path. Imported
lazily: the package works without Triton.
"""

from __future__ import annotations

import torch
import triton

from . import triton_kernels as kern
from .chunked import delta_rule_chunked

C = 64  # chunk length of the kernels


def _state_block(programs: int, dv: int) -> int:
    """Columns of the state per program of the state pass: small blocks (more programs in flight)
    while the batch·heads are few, wider ones (M read by fewer programs) once they fill the GPU."""
    bs = 16
    while bs < min(STATE_BLOCK, triton.next_power_of_2(dv)) and programs * triton.cdiv(dv, bs) > STATE_PROGRAMS:
        bs *= 2
    return bs


def _dot(dtype: torch.dtype, dk: int) -> str:
    """Products of the chunk-parallel kernels: tf32x3 (fp32-accurate) for fp32 inputs; LOW_PRECISION_DOT
    where the GPU check covers it (bf16 inputs, Dk = 64: bf16 products crashed with an illegal memory
    access at Dk = 32 on an H200 with Triton 3.6); tf32 otherwise (fp16 inputs, other Dk)."""
    if dtype == torch.float32:
        return "tf32x3"
    return LOW_PRECISION_DOT if dtype == torch.bfloat16 and dk == 64 else "tf32"


def _state_dot(dot: str) -> str:
    """The state passes chain one product per chunk, so their rounding compounds: never below tf32."""
    return "tf32" if dot == "bf16" else dot


class _DeltaRuleTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, h0, train):
        b, t, h, dk = k.shape
        dv = v.shape[-1]
        n = triton.cdiv(t, C)
        q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
        f32 = dict(device=q.device, dtype=torch.float32)
        dot = _dot(q.dtype, dk)
        shapes = dict(DK=dk, DV=dv, BK=triton.next_power_of_2(dk), BV=triton.next_power_of_2(dv), DOT=dot)
        tt = torch.empty(b * h, n, C, C, **f32) if train else None  # T is kept for the backward only
        # operands that every consumer rounds to bf16 anyway (bf16 products) are stored in bf16
        store = dict(device=q.device, dtype=torch.bfloat16 if dot == "bf16" else torch.float32)
        u = torch.empty(b * h, n, C, dv, **f32)
        wk = torch.empty(b * h, n, C, dk, **store)
        mm = torch.empty(b * h, n, dk, dk, **f32)
        bb = torch.empty(b * h, n, dk, dv, **f32)
        gc = torch.empty(b * h, n, C, **f32)
        kern.prep_fwd[(n, b * h)](k, v, g, beta, tt, u, wk, mm, bb, gc, t, n, h, **shapes, SAVE_T=train,
                                  **WARPS["prep_fwd"])
        h0 = torch.zeros(b, h, dk, dv, **f32) if h0 is None else h0.float().contiguous()
        hs = torch.empty(b * h, n + 1, dk, dv, **store)  # slot n unused: the final state goes to ht
        ht = torch.empty(b, h, dk, dv, **f32)
        bs = _state_block(b * h, dv)
        kern.state_fwd[(b * h, triton.cdiv(dv, bs))](mm, bb, h0, hs, ht, n, DK=dk, DV=dv, BS=bs, DOT=_state_dot(dot),
                                                     **WARPS["state_fwd"])
        o = torch.empty(b, t, h, dv, device=q.device, dtype=q.dtype)
        kern.output_fwd[(n, b * h)](q, k, gc, hs, u, wk, o, scale, t, n, h, **shapes, **WARPS["output_fwd"])
        ctx.save_for_backward(q, k, v, beta, tt, u, wk, mm, gc, hs)
        ctx.scale, ctx.shapes, ctx.g_dtype = scale, shapes, g.dtype
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, tt, u, wk, mm, gc, hs = ctx.saved_tensors
        b, t, h, dk = k.shape
        dv = v.shape[-1]
        n = gc.shape[1]
        shapes = ctx.shapes
        f32 = dict(device=q.device, dtype=torch.float32)
        do = torch.zeros(b, t, h, dv, device=q.device, dtype=q.dtype) if do is None else do.contiguous()
        dq = torch.empty_like(q)
        dko = torch.empty(b * h, n, C, dk, **f32)
        dgo = torch.empty(b * h, n, C, **f32)
        dw = torch.empty(b * h, n, C, dv, **f32)
        dhs = torch.empty(b * h, n + 1, dk, dv, **f32)
        dhs[:, n] = 0.0 if dht is None else dht.float().reshape(b * h, dk, dv)
        kern.output_bwd[(n, b * h)](q, k, gc, hs, u, wk, do, dq, dko, dgo, dw, dhs, ctx.scale, t, n, h, **shapes,
                                    **WARPS["output_bwd"])
        bs = _state_block(b * h, dv)
        kern.state_bwd[(b * h, triton.cdiv(dv, bs))](mm, dhs, n, DK=dk, DV=dv, BS=bs, DOT=_state_dot(shapes["DOT"]),
                                                     **WARPS["state_bwd"])
        dkb = torch.empty(b * h, n, C, dk, **f32)
        kern.prep_bwd_state[(n, b * h)](k, gc, tt, u, wk, hs, dhs, dw, dkb, dko, dgo, n, t, h, **shapes,
                                        **WARPS["prep_bwd_state"])
        dk_, dv_, dbeta = torch.empty_like(k), torch.empty_like(v), torch.empty_like(beta)
        dg = torch.empty(b, t, h, device=q.device, dtype=ctx.g_dtype)
        kern.prep_bwd_wy[(n, b * h)](k, v, beta, gc, u, wk, dw, dkb, dko, dgo, dk_, dv_, dg, dbeta, t, n, h, **shapes,
                                     **WARPS["prep_bwd_wy"])
        dh0 = dhs[:, 0].view(b, h, dk, dv) if ctx.needs_input_grad[6] else None
        return dq, dk_, dv_, dg, dbeta, None, dh0, None


# launch options, picked by `benchmarks/ops_gpu.py --sweep` on an H200 (bf16, H=4, D=64)
WARPS = {"prep_fwd": {"num_warps": 2}, "state_fwd": {"num_warps": 4}, "output_fwd": {"num_warps": 4},
         "output_bwd": {"num_warps": 4}, "state_bwd": {"num_warps": 2}, "prep_bwd_state": {"num_warps": 4},
         "prep_bwd_wy": {"num_warps": 4}}
LOW_PRECISION_DOT = "bf16"  # products for bf16/fp16 inputs: "tf32" or "bf16" (operands rounded to bf16)
STATE_BLOCK = 64  # at most this many state columns per program of the state passes
STATE_PROGRAMS = 264  # ... and wider blocks once more programs than this (2 per SM of an H200) would run


@torch.compiler.disable  # torch.compile leaves the fused kernels alone (a graph break around them)
def delta_rule_triton(q, k, v, g, beta, scale, initial_state=None):
    """Same contract as `delta_rule_chunked` (dense batch, [B, T, H, D]); Dk a power of two ≥ 16."""
    dk, dv = q.shape[-1], v.shape[-1]
    if dk < 16 or dk & (dk - 1) or dv < 16:
        raise ValueError(f"the triton delta rule needs Dk a power of two ≥ 16 and Dv ≥ 16 (got Dk={dk}, Dv={dv})")
    if q.dtype == torch.float64:  # the kernels compute in fp32; float64 stays exact on the PyTorch path
        return delta_rule_chunked(q, k, v, g, beta, scale, initial_state)
    inputs = (q, k, v, g, beta, initial_state)
    train = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)
    return _DeltaRuleTriton.apply(q, k, v, g, beta, scale, initial_state, train)
