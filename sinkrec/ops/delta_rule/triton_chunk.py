"""Triton kernels for the sequential part of the chunked gated delta rule (forward and backward).

The chunked algorithm (chunked.py) is batched matrix work except one hand-off between chunks:
    W_i = U_i − Wk_i h_i,        h_{i+1} = d_i h_i + K̃_iᵀ W_i.
In PyTorch that is a Python loop of N = T/64 steps with several launches each; here one kernel
keeps h in registers and walks all chunks (one program per (batch·head, block of Dv columns):
columns of h are independent). The backward kernel walks the chunks in reverse:
    dW_i = dW_i^ext + K̃_i g_{i+1},   dK̃_i = W_i g_{i+1}ᵀ,   dd_i = Σ g_{i+1} ⊙ h_i,
    dU_i = dW_i,   dWk_i = −dW_i h_iᵀ,   g_i = dh_i^ext + d_i g_{i+1} − Wk_iᵀ dW_i,
with g the gradient flowing into the state. Per-Dv-block partial sums of dK̃, dWk, dd are added
up afterwards. Imported lazily: the package works without Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunked import delta_rule_chunked


@triton.jit
def _state_fwd_kernel(U, WK, KT, D, H0, W, HS, N, C: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                      BV: tl.constexpr, IEEE: tl.constexpr):
    bh = tl.program_id(0)
    vb = tl.program_id(1)
    rc = tl.arange(0, C)
    rk = tl.arange(0, DK)
    rv = vb * BV + tl.arange(0, BV)
    vmask = rv < DV
    h = tl.load(H0 + bh * DK * DV + rk[:, None] * DV + rv[None, :], mask=vmask[None, :], other=0.0).to(tl.float32)
    for i in range(N):
        chunk = bh * N + i
        tl.store(HS + (bh * (N + 1) + i) * DK * DV + rk[:, None] * DV + rv[None, :], h, mask=vmask[None, :])
        u = tl.load(U + chunk * C * DV + rc[:, None] * DV + rv[None, :], mask=vmask[None, :], other=0.0)
        wk = tl.load(WK + chunk * C * DK + rc[:, None] * DK + rk[None, :])
        kt = tl.load(KT + chunk * C * DK + rc[:, None] * DK + rk[None, :])
        d = tl.load(D + chunk).to(tl.float32)
        if IEEE:
            w = u.to(tl.float32) - tl.dot(wk.to(tl.float32), h, input_precision="ieee")
            h = d * h + tl.dot(tl.trans(kt.to(tl.float32)), w, input_precision="ieee")
        else:
            w = u.to(tl.float32) - tl.dot(wk, h.to(wk.dtype))
            h = d * h + tl.dot(tl.trans(kt), w.to(kt.dtype))
        tl.store(W + chunk * C * DV + rc[:, None] * DV + rv[None, :], w, mask=vmask[None, :])
    tl.store(HS + (bh * (N + 1) + N) * DK * DV + rk[:, None] * DV + rv[None, :], h, mask=vmask[None, :])


@triton.jit
def _state_bwd_kernel(WK, KT, D, W, HS, DW, DHS, DU, DWK, DKT, DD, DH0, N, NV, C: tl.constexpr,
                      DK: tl.constexpr, DV: tl.constexpr, BV: tl.constexpr, IEEE: tl.constexpr):
    bh = tl.program_id(0)
    vb = tl.program_id(1)
    rc = tl.arange(0, C)
    rk = tl.arange(0, DK)
    rv = vb * BV + tl.arange(0, BV)
    vmask = rv < DV
    hv = rk[:, None] * DV + rv[None, :]
    gh = tl.load(DHS + (bh * (N + 1) + N) * DK * DV + hv, mask=vmask[None, :], other=0.0).to(tl.float32)
    for j in range(N):
        i = N - 1 - j
        chunk = bh * N + i
        cv = chunk * C * DV + rc[:, None] * DV + rv[None, :]
        ck = chunk * C * DK + rc[:, None] * DK + rk[None, :]
        h = tl.load(HS + (bh * (N + 1) + i) * DK * DV + hv, mask=vmask[None, :], other=0.0).to(tl.float32)
        w = tl.load(W + cv, mask=vmask[None, :], other=0.0).to(tl.float32)
        kt = tl.load(KT + ck).to(tl.float32)
        wk = tl.load(WK + ck).to(tl.float32)
        d = tl.load(D + chunk).to(tl.float32)
        dw_ext = tl.load(DW + cv, mask=vmask[None, :], other=0.0).to(tl.float32)
        if IEEE:
            dw = dw_ext + tl.dot(kt, gh, input_precision="ieee")
            dkt = tl.dot(w, tl.trans(gh), input_precision="ieee")
            dwk = -tl.dot(dw, tl.trans(h), input_precision="ieee")
            back = tl.dot(tl.trans(wk), dw, input_precision="ieee")
        else:
            dw = dw_ext + tl.dot(kt, gh)
            dkt = tl.dot(w, tl.trans(gh))
            dwk = -tl.dot(dw, tl.trans(h))
            back = tl.dot(tl.trans(wk), dw)
        part = (bh * NV + vb) * N + i
        tl.store(DU + cv, dw, mask=vmask[None, :])
        tl.store(DKT + part * C * DK + rc[:, None] * DK + rk[None, :], dkt)
        tl.store(DWK + part * C * DK + rc[:, None] * DK + rk[None, :], dwk)
        tl.store(DD + part, tl.sum(tl.sum(gh * h, axis=1), axis=0))
        dhs = tl.load(DHS + (bh * (N + 1) + i) * DK * DV + hv, mask=vmask[None, :], other=0.0).to(tl.float32)
        gh = dhs + d * gh - back
    tl.store(DH0 + bh * DK * DV + hv, gh, mask=vmask[None, :])


def _block_v(dv: int) -> int:
    return max(16, min(32, triton.next_power_of_2(dv)))


class _StatePass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, U, Wk, k_tail, chunk_decay, h0):
        b, h, n, c, dv = U.shape
        dk = Wk.shape[-1]
        if c < 16 or dk < 16 or c & (c - 1) or dk & (dk - 1):
            raise ValueError(f"triton delta rule needs power-of-two chunk and Dk ≥ 16 (got C={c}, Dk={dk})")
        U, Wk, k_tail = U.contiguous(), Wk.contiguous(), k_tail.contiguous()
        chunk_decay, h0 = chunk_decay.float().contiguous(), h0.float().contiguous()
        W = torch.empty(b, h, n, c, dv, device=U.device, dtype=torch.float32)
        HS = torch.empty(b, h, n + 1, dk, dv, device=U.device, dtype=torch.float32)
        bv = _block_v(dv)
        ieee = U.dtype == torch.float64 or U.dtype == torch.float32 and _StatePass.exact_fp32
        grid = (b * h, triton.cdiv(dv, bv))
        _state_fwd_kernel[grid](U, Wk, k_tail, chunk_decay, h0, W, HS, n, C=c, DK=dk, DV=dv, BV=bv, IEEE=ieee)
        ctx.save_for_backward(Wk, k_tail, chunk_decay, W, HS)
        ctx.ieee = ieee
        return W.to(U.dtype), HS.to(U.dtype)

    @staticmethod
    def backward(ctx, dW, dHS):
        Wk, k_tail, chunk_decay, W, HS = ctx.saved_tensors
        b, h, n, c, dk = Wk.shape
        dv = W.shape[-1]
        bv = _block_v(dv)
        nv = triton.cdiv(dv, bv)
        dev = Wk.device
        dW = torch.zeros_like(W) if dW is None else dW.float().contiguous()
        dHS = torch.zeros_like(HS) if dHS is None else dHS.float().contiguous()
        dU = torch.empty(b, h, n, c, dv, device=dev, dtype=torch.float32)
        dWk = torch.empty(b * h, nv, n, c, dk, device=dev, dtype=torch.float32)
        dKt = torch.empty(b * h, nv, n, c, dk, device=dev, dtype=torch.float32)
        dD = torch.empty(b * h, nv, n, device=dev, dtype=torch.float32)
        dh0 = torch.empty(b, h, dk, dv, device=dev, dtype=torch.float32)
        _state_bwd_kernel[(b * h, nv)](Wk, k_tail, chunk_decay, W, HS, dW, dHS, dU, dWk, dKt, dD, dh0, n, nv,
                                       C=c, DK=dk, DV=dv, BV=bv, IEEE=ctx.ieee)
        dtype = Wk.dtype
        shape = (b, h, n, c, dk)
        return (dU.to(dtype), dWk.sum(1).view(shape).to(dtype), dKt.sum(1).view(shape).to(dtype),
                dD.sum(1).view(b, h, n).to(chunk_decay.dtype), dh0)


_StatePass.exact_fp32 = False  # tests set True to compare fp32 against the reference without tf32


def state_pass_triton(U, Wk, k_tail, chunk_decay, h0):
    return _StatePass.apply(U, Wk, k_tail, chunk_decay, h0)


def delta_rule_triton(q, k, v, g, beta, scale, initial_state=None, chunk_size: int = 64):
    """The chunked algorithm with the chunk-to-chunk hand-off in Triton (same contract)."""
    return delta_rule_chunked(q, k, v, g, beta, scale, initial_state, chunk_size, state_pass=state_pass_triton)
