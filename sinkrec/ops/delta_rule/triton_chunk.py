"""The chunked gated delta rule on Triton kernels (triton_kernels.py), with its own backward.

Six launches per forward+backward, no T×T or per-chunk Python loops: two batched kernels over all
chunks and one sequential state pass each way. fp32 and bf16/fp16 inputs (fp32 arithmetic and state;
tf32 products unless the inputs are fp32); float64 goes to the PyTorch chunked path. Imported
lazily: the package works without Triton.
"""

from __future__ import annotations

import torch
import triton

from . import triton_kernels as kern
from .chunked import delta_rule_chunked

C = 64  # chunk length of the kernels


def _state_block(dv: int) -> int:
    """Columns of the state per program of the state pass: small blocks, more programs in flight."""
    return max(16, min(32, triton.next_power_of_2(dv)))


class _DeltaRuleTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, h0):
        b, t, h, dk = k.shape
        dv = v.shape[-1]
        n = triton.cdiv(t, C)
        dev = q.device
        q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
        f32 = dict(device=dev, dtype=torch.float32)
        dot = "ieee" if q.dtype == torch.float32 else "tf32"
        bk, bv = triton.next_power_of_2(dk), triton.next_power_of_2(dv)
        tt = torch.empty(b * h, n, C, C, **f32)
        u = torch.empty(b * h, n, C, dv, **f32)
        wk = torch.empty(b * h, n, C, dk, **f32)
        kt = torch.empty(b * h, n, C, dk, **f32)
        gc = torch.empty(b * h, n, C, **f32)
        dc = torch.empty(b * h, n, **f32)
        kern.prep_fwd[(n, b * h)](k, v, g, beta, tt, u, wk, kt, gc, dc, t, n, h, DK=dk, DV=dv, BK=bk, BV=bv, DOT=dot)
        h0 = torch.zeros(b, h, dk, dv, **f32) if h0 is None else h0.float().contiguous()
        w = torch.empty(b * h, n, C, dv, **f32)
        hs = torch.empty(b * h, n + 1, dk, dv, **f32)
        bs = _state_block(dv)
        kern.state_fwd[(b * h, triton.cdiv(dv, bs))](u, wk, kt, dc, h0, w, hs, n, DK=dk, DV=dv, BS=bs, DOT=dot)
        o = torch.empty(b, t, h, dv, device=dev, dtype=q.dtype)
        kern.output_fwd[(n, b * h)](q, k, gc, hs, w, o, scale, t, n, h, DK=dk, DV=dv, BK=bk, BV=bv, DOT=dot)
        ctx.save_for_backward(q, k, v, beta, tt, wk, kt, gc, dc, w, hs)
        ctx.scale, ctx.dot, ctx.g_dtype = scale, dot, g.dtype
        return o, hs[:, n].view(b, h, dk, dv)

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, tt, wk, kt, gc, dc, w, hs = ctx.saved_tensors
        b, t, h, dk = k.shape
        dv = v.shape[-1]
        n = gc.shape[1]
        dev = q.device
        f32 = dict(device=dev, dtype=torch.float32)
        bk, bv, bs = triton.next_power_of_2(dk), triton.next_power_of_2(dv), _state_block(dv)
        ns = triton.cdiv(dv, bs)
        do = torch.zeros_like(q[..., :1].expand(b, t, h, dv)) if do is None else do.contiguous()
        dq = torch.empty_like(q)
        dko = torch.empty(b * h, n, C, dk, **f32)
        dgo = torch.empty(b * h, n, C, **f32)
        dw = torch.empty(b * h, n, C, dv, **f32)
        dhs = torch.empty(b * h, n + 1, dk, dv, **f32)
        dhs[:, n] = 0.0 if dht is None else dht.float().reshape(b * h, dk, dv)
        kern.output_bwd[(n, b * h)](q, k, gc, hs, w, do, dq, dko, dgo, dw, dhs, ctx.scale, t, n, h,
                                    DK=dk, DV=dv, BK=bk, BV=bv, DOT=ctx.dot)
        du = torch.empty(b * h, n, C, dv, **f32)
        dwk = torch.empty(b * h, ns, n, C, dk, **f32)
        dkt = torch.empty(b * h, ns, n, C, dk, **f32)
        dd = torch.empty(b * h, ns, n, **f32)
        dh0 = torch.empty(b, h, dk, dv, **f32)
        kern.state_bwd[(b * h, ns)](wk, kt, dc, w, hs, dw, dhs, du, dwk, dkt, dd, dh0, n, ns,
                                    DK=dk, DV=dv, BS=bs, DOT=ctx.dot)
        dk_, dv_ = torch.empty_like(k), torch.empty_like(v)
        dg = torch.empty(b, t, h, device=dev, dtype=ctx.g_dtype)
        dbeta = torch.empty_like(beta)
        kern.prep_bwd[(n, b * h)](k, v, beta, gc, tt, du, dwk, dkt, dd.sum(1).contiguous(), dko, dgo,
                                  dk_, dv_, dg, dbeta, t, n, h, ns, DK=dk, DV=dv, BK=bk, BV=bv, DOT=ctx.dot)
        return dq, dk_, dv_, dg, dbeta, None, dh0 if ctx.needs_input_grad[6] else None


def delta_rule_triton(q, k, v, g, beta, scale, initial_state=None):
    """Same contract as `delta_rule_chunked` (dense batch, [B, T, H, D]); Dk a power of two ≥ 16."""
    dk, dv = q.shape[-1], v.shape[-1]
    if dk < 16 or dk & (dk - 1) or dv < 16:
        raise ValueError(f"the triton delta rule needs Dk a power of two ≥ 16 and Dv ≥ 16 (got Dk={dk}, Dv={dv})")
    if q.dtype == torch.float64:  # the kernels compute in fp32; float64 stays exact on the PyTorch path
        return delta_rule_chunked(q, k, v, g, beta, scale, initial_state)
    return _DeltaRuleTriton.apply(q, k, v, g, beta, scale, initial_state)
