"""Triton kernels for the blocked feedback solve (see blocked.py for the algorithm).

Five kernels, all attention-style with the row normaliser known (every exp(ℓ − lse) ≤ 1, so key
blocks add up without rescaling): the lse pass, the forward push of one leaf to every later row, the
backward push of one leaf to every earlier key, and the dq / dk passes of the backward. q, k stay in
the input dtype (fp32: tf32x3 products, fp32-accurate; bf16/fp16: 16-bit products, fp32
accumulation); s, h, u and every accumulator are fp32. T is padded to a multiple of the leaf, itself a
multiple of the tile, so only the feature dimensions need masks. Imported lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .blocked import _BlockedSolve, _round_up

# Picked by `benchmarks/sessa_solve_gpu.py --sweep` on an H200 (bf16, D = 256): leaf 1024 and whole-width
# column blocks are fastest at T = 8192 and 32768 (5.7 / 23.0 ms fwd+bwd against 7.6 / 28.4 at 512 / 128);
# at T = 2048 the 512-row leaf is (3.0 against 3.5 ms).
LEAF = 1024  # rows per leaf at long T (smaller when T is short)
SHORT_LEAF, SHORT_T = 512, 4096  # the leaf up to T = SHORT_T
BD_MAX = 256  # feature columns per program of the update kernels (scores are recomputed per column block)


@triton.jit
def _load_rows(ptr, rows, cols, width):
    """[len(rows), len(cols)] of a row-major [*, width] matrix, zero past `width`."""
    return tl.load(ptr + rows[:, None] * width + cols[None, :], mask=cols[None, :] < width, other=0.0)


@triton.jit
def _load_cols(ptr, rows, cols, width):
    """The transpose, [len(cols), len(rows)]."""
    return tl.load(ptr + rows[None, :] * width + cols[:, None], mask=cols[:, None] < width, other=0.0)


@triton.jit
def _lse_kernel(Q, K, LSE, T, scale, DQ, BQ: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                PREC: tl.constexpr):
    pid_m, pid_b = tl.program_id(0), tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    dq = tl.arange(0, BQ)
    q = _load_rows(Q + pid_b * T * DQ, rows, dq, DQ)
    m = tl.full([BM], float("-inf"), tl.float32)
    l_sum = tl.zeros([BM], tl.float32)
    for c0 in range(0, (pid_m + 1) * BM, BN):
        cols = c0 + tl.arange(0, BN)
        kt = _load_cols(K + pid_b * T * DQ, cols, dq, DQ)
        sc = tl.dot(q, kt, input_precision=PREC) * scale
        sc = tl.where(cols[None, :] < rows[:, None], sc, float("-inf"))
        m_new = tl.maximum(m, tl.max(sc, 1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_sum = l_sum * tl.exp(m - shift) + tl.sum(tl.exp(sc - shift[:, None]), 1)
        m = m_new
    lse = tl.where(l_sum > 0, m + tl.log(l_sum), 1e30)  # NO_PAST
    tl.store(LSE + pid_b * T + rows, lse)


@triton.jit
def _fwd_update_kernel(Q, K, LSE, SL, H, T, row0, key0, S, scale, D, DQ, BQ: tl.constexpr, BD: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr):
    """H[rows] += exp(ℓ[rows, key0:key0+S] − lse) @ SL for rows ≥ row0 (SL: [B, S, D] fp32)."""
    pid_m, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = row0 + pid_m * BM + tl.arange(0, BM)
    dq = tl.arange(0, BQ)
    dcols = pid_d * BD + tl.arange(0, BD)
    q = _load_rows(Q + pid_b * T * DQ, rows, dq, DQ)
    lse = tl.load(LSE + pid_b * T + rows)
    acc = tl.zeros([BM, BD], tl.float32)
    for c0 in range(0, S, BN):
        kt = _load_cols(K + pid_b * T * DQ, key0 + c0 + tl.arange(0, BN), dq, DQ)
        p = tl.exp(tl.dot(q, kt, input_precision=PREC) * scale - lse[:, None])
        v = _load_rows(SL + pid_b * S * D, c0 + tl.arange(0, BN), dcols, D)
        acc += tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision=PREC)
    hp = H + pid_b * T * D + rows[:, None] * D + dcols[None, :]
    dmask = dcols[None, :] < D
    tl.store(hp, tl.load(hp, mask=dmask, other=0.0) + acc, mask=dmask)


@triton.jit
def _bwd_update_kernel(Q, K, LSE, WL, ACC, T, q0, S, scale, D, DQ, BQ: tl.constexpr, BD: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr):
    """ACC[keys] += exp(ℓ[q0:q0+S, keys] − lse)ᵀ @ WL for keys < q0 (WL: [B, S, D] fp32)."""
    pid_n, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    cols = pid_n * BN + tl.arange(0, BN)
    dq = tl.arange(0, BQ)
    dcols = pid_d * BD + tl.arange(0, BD)
    k = _load_rows(K + pid_b * T * DQ, cols, dq, DQ)
    acc = tl.zeros([BN, BD], tl.float32)
    for r0 in range(0, S, BM):
        rows = q0 + r0 + tl.arange(0, BM)
        qt = _load_cols(Q + pid_b * T * DQ, rows, dq, DQ)
        lse = tl.load(LSE + pid_b * T + rows)
        pt = tl.exp(tl.dot(k, qt, input_precision=PREC) * scale - lse[None, :])
        w = _load_rows(WL + pid_b * S * D, r0 + tl.arange(0, BM), dcols, D)
        acc += tl.dot(pt.to(k.dtype), w.to(k.dtype), input_precision=PREC)
    ap = ACC + pid_b * T * D + cols[:, None] * D + dcols[None, :]
    dmask = dcols[None, :] < D
    tl.store(ap, tl.load(ap, mask=dmask, other=0.0) + acc, mask=dmask)


@triton.jit
def _dq_kernel(Q, K, LSE, G, SV, U, DELTA, DQo, T, scale, D, DQ, BQ: tl.constexpr, BDP: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr):
    """dq_t = scale Σ_{j<t} γ_t α_{t,j} (u_t·s_j − δ_t) k_j."""
    pid_m, pid_b = tl.program_id(0), tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    dq = tl.arange(0, BQ)
    dd = tl.arange(0, BDP)
    q = _load_rows(Q + pid_b * T * DQ, rows, dq, DQ)
    u = _load_rows(U + pid_b * T * D, rows, dd, D).to(q.dtype)
    lse = tl.load(LSE + pid_b * T + rows)
    gam = tl.load(G + pid_b * T + rows) * scale
    delta = tl.load(DELTA + pid_b * T + rows)
    acc = tl.zeros([BM, BQ], tl.float32)
    for c0 in range(0, (pid_m + 1) * BM, BN):
        cols = c0 + tl.arange(0, BN)
        kt = _load_cols(K + pid_b * T * DQ, cols, dq, DQ)
        sc = tl.dot(q, kt, input_precision=PREC) * scale - lse[:, None]
        p = tl.where(cols[None, :] < rows[:, None], tl.exp(sc), 0.0)
        st = _load_cols(SV + pid_b * T * D, cols, dd, D).to(q.dtype)
        dp = tl.dot(u, st, input_precision=PREC)
        dl = gam[:, None] * p * (dp - delta[:, None])
        acc += tl.dot(dl.to(q.dtype), tl.trans(kt), input_precision=PREC)
    tl.store(DQo + pid_b * T * DQ + rows[:, None] * DQ + dq[None, :], acc, mask=dq[None, :] < DQ)


@triton.jit
def _dk_kernel(Q, K, LSE, G, SV, U, DELTA, DKo, T, scale, D, DQ, BQ: tl.constexpr, BDP: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr):
    """dk_j = scale Σ_{t>j} γ_t α_{t,j} (u_t·s_j − δ_t) q_t."""
    pid_n, pid_b = tl.program_id(0), tl.program_id(1)
    cols = pid_n * BN + tl.arange(0, BN)
    dq = tl.arange(0, BQ)
    dd = tl.arange(0, BDP)
    k = _load_rows(K + pid_b * T * DQ, cols, dq, DQ)
    sv = _load_rows(SV + pid_b * T * D, cols, dd, D).to(k.dtype)
    acc = tl.zeros([BN, BQ], tl.float32)
    for r0 in range(pid_n * BN, T, BM):
        rows = r0 + tl.arange(0, BM)
        qt = _load_cols(Q + pid_b * T * DQ, rows, dq, DQ)
        lse = tl.load(LSE + pid_b * T + rows)
        gam = tl.load(G + pid_b * T + rows) * scale
        delta = tl.load(DELTA + pid_b * T + rows)
        sct = tl.dot(k, qt, input_precision=PREC) * scale - lse[None, :]
        pt = tl.where(cols[:, None] < rows[None, :], tl.exp(sct), 0.0)
        ut = _load_cols(U + pid_b * T * D, rows, dd, D).to(k.dtype)
        dpt = tl.dot(sv, ut, input_precision=PREC)
        dlt = gam[None, :] * pt * (dpt - delta[None, :])
        acc += tl.dot(dlt.to(k.dtype), tl.trans(qt), input_precision=PREC)
    tl.store(DKo + pid_b * T * DQ + cols[:, None] * DQ + dq[None, :], acc, mask=dq[None, :] < DQ)


def _p2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


class TritonKernels:
    """The kernel set of `blocked._BlockedSolve` on Triton (same signatures as `blocked.TorchKernels`)."""

    @staticmethod
    def _cfg(q: torch.Tensor) -> dict:
        wide = q.dtype == torch.float32 or q.shape[-1] > 256
        return dict(BM=32 if wide else 64, BN=32 if wide else 64,
                    PREC="tf32x3" if q.dtype == torch.float32 else "tf32")

    @classmethod
    def lse(cls, q, k, scale, block):
        b, t, dq = q.shape
        cfg = cls._cfg(q)
        out = torch.empty(b, t, device=q.device, dtype=torch.float32)
        _lse_kernel[(t // cfg["BM"], b)](q, k, out, t, scale, dq, BQ=_p2(dq), **cfg, num_warps=4)
        return out

    @classmethod
    def fwd_update(cls, q, k, lse, s_leaf, h, row0, key0, scale):
        b, t, dq = q.shape
        d, leaf = h.shape[-1], s_leaf.shape[1]
        cfg = cls._cfg(q)
        bd = min(BD_MAX, _p2(d))
        s_leaf = s_leaf.to(q.dtype)
        grid = ((t - row0) // cfg["BM"], triton.cdiv(d, bd), b)
        _fwd_update_kernel[grid](q, k, lse, s_leaf, h, t, row0, key0, leaf, scale, d, dq, BQ=_p2(dq), BD=bd, **cfg,
                                 num_warps=8 if cfg["BM"] == 64 else 4, num_stages=2)

    @classmethod
    def bwd_update(cls, q, k, lse, w_leaf, acc, q0, scale):
        b, t, dq = q.shape
        d, leaf = acc.shape[-1], w_leaf.shape[1]
        cfg = cls._cfg(q)
        bd = min(BD_MAX, _p2(d))
        w_leaf = w_leaf.to(k.dtype)
        grid = (q0 // cfg["BN"], triton.cdiv(d, bd), b)
        _bwd_update_kernel[grid](q, k, lse, w_leaf, acc, t, q0, leaf, scale, d, dq, BQ=_p2(dq), BD=bd, **cfg,
                                 num_warps=8 if cfg["BM"] == 64 else 4, num_stages=2)

    @classmethod
    def dqdk(cls, q, k, lse, gamma, s, u, delta, scale, block):
        b, t, dq = q.shape
        d = s.shape[-1]
        cfg = cls._cfg(q)
        dqo = torch.empty(b, t, dq, device=q.device, dtype=torch.float32)
        dko = torch.empty_like(dqo)
        s, u = s.to(q.dtype), u.to(q.dtype)  # the products' operand dtype (a no-op for fp32)
        args = dict(BQ=_p2(dq), BDP=_p2(d), **cfg, num_warps=8 if cfg["BM"] == 64 else 4, num_stages=1)
        _dq_kernel[(t // cfg["BM"], b)](q, k, lse, gamma, s, u, delta, dqo, t, scale, d, dq, **args)
        _dk_kernel[(t // cfg["BN"], b)](q, k, lse, gamma, s, u, delta, dko, t, scale, d, dq, **args)
        return dqo, dko


def feedback_solve_triton(f: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor, gamma: torch.Tensor,
                          scale: float | None = None, block: int | None = None) -> torch.Tensor:
    """The blocked solve with Triton kernels: fp32/bf16/fp16 inputs (float64 → the PyTorch path)."""
    from .blocked import feedback_solve_blocked

    scale = qb.shape[-1] ** -0.5 if scale is None else scale
    if f.dtype == torch.float64 or qb.dtype == torch.float64:
        return feedback_solve_blocked(f, qb, kb, gamma, scale)
    leaf = min(block or (SHORT_LEAF if f.shape[1] <= SHORT_T else LEAF), _round_up(f.shape[1], 64))
    if leaf % 64:
        raise ValueError(f"the Triton leaf must be a multiple of 64, got {leaf}")
    kdtype = qb.dtype if qb.dtype in (torch.float16, torch.bfloat16) else torch.float32
    return _BlockedSolve.apply(f, qb, kb, gamma, scale, leaf, TritonKernels, kdtype)
