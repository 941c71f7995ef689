"""Triton kernels for the blocked feedback solve (see blocked.py for the algorithm).

Five kernels, all attention-style with the row normaliser known (every exp(ℓ − lse) ≤ 1, so key
blocks add up without rescaling): the lse pass, the forward push of one leaf to every later row, the
backward push of one leaf to every earlier key, and the dq / dk passes of the backward (behind the speed
switches below: a fused dq+dk pass, the leaf step, the leaf blocks). q, k stay in
the input dtype (fp32: tf32x3 products, fp32-accurate; bf16/fp16: 16-bit products, fp32
accumulation); s, h, u and every accumulator are fp32. T is padded to a multiple of the leaf, itself a
multiple of the tile, so only the feature dimensions need masks. Imported lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from .blocked import TorchKernels, _BlockedSolve, _leaves, _round_up

# Picked by `benchmarks/sessa_solve_gpu.py --sweep` on an H200 (bf16, D = 256): leaf 1024 and whole-width
# column blocks are fastest at T = 8192 and 32768 (5.7 / 23.0 ms fwd+bwd against 7.6 / 28.4 at 512 / 128);
# at T = 2048 the 512-row leaf is (3.0 against 3.5 ms).
LEAF = 1024  # rows per leaf at long T (smaller when T is short)
SHORT_LEAF, SHORT_T = 512, 4096  # the leaf up to T = SHORT_T
BD_MAX = 256  # feature columns per program of the update kernels (scores are recomputed per column block)

# Speed switches (issue 25; benchmarks/sessa_gpu_round.sh times each against the path before them,
# benchmarks/results/sessa_solve_notes.md has the predictions). All False / the old tiles = the measured 22.9 ms path.
# Tiles of the bf16/fp16 kernels at Dq ≤ 256 (fp32 or wider q, k keep 32×32): rows BM, keys BN, warps, stages.
CFG = {"lse": dict(BM=64, BN=64, num_warps=4, num_stages=None),
       "push": dict(BM=64, BN=64, num_warps=8, num_stages=2),
       "dq": dict(BM=64, BN=64, num_warps=8, num_stages=1),
       "dk": dict(BM=64, BN=64, num_warps=8, num_stages=1),
       "dqdk": dict(BM=64, BN=128, num_warps=8, num_stages=1)}  # 64×64 needs 240 KB of shared memory (H200: 227)
# The switches below as measured on an H200 (sessa_solve_round-a7fca26.json, bf16, D 256, fwd+bwd): all on 20.4 ms
# at 1×32768 and 5.2 at 2×8192, against 22.6 and 6.3 off; checked there against float64. FUSED_DQDK (dqdk tiles
# 64×128) on top: 15.2 ms there, 15.65 against 20.38 on an H100 (sessa_solve_round-h100-42a58a3.json, where its
# fp32 and bf16 GPU checks against float64 passed); 2×8192 5.18 against 4.89 (within that machine's spread).
LONGEST_FIRST = True  # lse and dq programs start from the last rows (the longest causal loops) instead of the first
FUSED_STEP = True  # the leaf step s_I = Inv_I (f_I + γ h_I) (and u_I = Inv_Iᵀ (g_I + acc_I)) as one Triton kernel
#                     (tf32x3, fp32-accurate) writing s and its push operand, not 4 torch ops + an fp32 GEMM
TRITON_LEAVES = True  # the leaf blocks P_I and I − γP_I by a Triton kernel from the 16-bit q, k (not fp32 copies
#                        and a fp32 batched GEMM), and h += P_I s_I for every leaf in one Triton launch
PUSH_SPLIT = True  # pushes with few row (key) programs split the leaf's keys (rows) over programs, fp32 atomics
FUSED_DQDK = True  # dq and dk in one kernel (4 products per causal tile, not 6; dq by fp32 atomics)
INV_BASE = 128  # > 0: leaf inverses by doubling from INV_BASE-row triangular solves ([[A,0],[C,B]]⁻¹ has the
#               corner −B⁻¹CA⁻¹: batched fp32 GEMMs), not one batched trsm of the whole leaf (0)
_FUSED_FITS: dict[tuple, bool] = {}  # (dtype, Dq, D, leaf) → False once FUSED_DQDK's kernel did not fit the GPU
SPLIT_ATOMIC_COST = 0.5  # an atomic tile write, in loop iterations (the split model of `_split`)
STEP_CFG = dict(BM=64, BK=64, BD=64, num_warps=4, num_stages=2)  # tiles of the leaf step and the intra-leaf product


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
                PREC: tl.constexpr, REV: tl.constexpr):
    pid_m, pid_b = tl.program_id(0), tl.program_id(1)
    if REV:
        pid_m = tl.num_programs(0) - 1 - pid_m
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


@triton.jit(do_not_specialize=["SPLIT"])  # one compile for every split > 1
def _fwd_update_kernel(Q, K, LSE, SL, H, T, row0, key0, S, scale, D, DQ, BQ: tl.constexpr, BD: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr, SPLIT, ATOMIC: tl.constexpr):
    """H[rows] += exp(ℓ[rows, key0:key0+S] − lse) @ SL for rows ≥ row0 (SL: [B, S, D], the q dtype).
    SPLIT > 1 (ATOMIC): program_id(1) also picks one of SPLIT equal key ranges, added with atomics."""
    pid_m, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    pid_s = pid_d % SPLIT
    pid_d = pid_d // SPLIT
    rows = row0 + pid_m * BM + tl.arange(0, BM)
    dq = tl.arange(0, BQ)
    dcols = pid_d * BD + tl.arange(0, BD)
    q = _load_rows(Q + pid_b * T * DQ, rows, dq, DQ)
    lse = tl.load(LSE + pid_b * T + rows)
    acc = tl.zeros([BM, BD], tl.float32)
    for c0 in range(pid_s * (S // SPLIT), (pid_s + 1) * (S // SPLIT), BN):
        kt = _load_cols(K + pid_b * T * DQ, key0 + c0 + tl.arange(0, BN), dq, DQ)
        p = tl.exp(tl.dot(q, kt, input_precision=PREC) * scale - lse[:, None])
        v = _load_rows(SL + pid_b * S * D, c0 + tl.arange(0, BN), dcols, D)
        acc += tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision=PREC)
    hp = H + pid_b * T * D + rows[:, None] * D + dcols[None, :]
    dmask = dcols[None, :] < D
    if ATOMIC:
        tl.atomic_add(hp, acc, mask=dmask, sem="relaxed")
    else:
        tl.store(hp, tl.load(hp, mask=dmask, other=0.0) + acc, mask=dmask)


@triton.jit(do_not_specialize=["SPLIT"])  # one compile for every split > 1
def _bwd_update_kernel(Q, K, LSE, WL, ACC, T, q0, S, scale, D, DQ, BQ: tl.constexpr, BD: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr, SPLIT, ATOMIC: tl.constexpr):
    """ACC[keys] += exp(ℓ[q0:q0+S, keys] − lse)ᵀ @ WL for keys < q0 (WL: [B, S, D], the q dtype).
    SPLIT > 1 (ATOMIC): program_id(1) also picks one of SPLIT equal row ranges, added with atomics."""
    pid_n, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    pid_s = pid_d % SPLIT
    pid_d = pid_d // SPLIT
    cols = pid_n * BN + tl.arange(0, BN)
    dq = tl.arange(0, BQ)
    dcols = pid_d * BD + tl.arange(0, BD)
    k = _load_rows(K + pid_b * T * DQ, cols, dq, DQ)
    acc = tl.zeros([BN, BD], tl.float32)
    for r0 in range(pid_s * (S // SPLIT), (pid_s + 1) * (S // SPLIT), BM):
        rows = q0 + r0 + tl.arange(0, BM)
        qt = _load_cols(Q + pid_b * T * DQ, rows, dq, DQ)
        lse = tl.load(LSE + pid_b * T + rows)
        pt = tl.exp(tl.dot(k, qt, input_precision=PREC) * scale - lse[None, :])
        w = _load_rows(WL + pid_b * S * D, r0 + tl.arange(0, BM), dcols, D)
        acc += tl.dot(pt.to(k.dtype), w.to(k.dtype), input_precision=PREC)
    ap = ACC + pid_b * T * D + cols[:, None] * D + dcols[None, :]
    dmask = dcols[None, :] < D
    if ATOMIC:
        tl.atomic_add(ap, acc, mask=dmask, sem="relaxed")
    else:
        tl.store(ap, tl.load(ap, mask=dmask, other=0.0) + acc, mask=dmask)


@triton.jit
def _dq_kernel(Q, K, LSE, G, SV, U, DELTA, DQo, T, scale, D, DQ, BQ: tl.constexpr, BDP: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr, REV: tl.constexpr):
    """dq_t = scale Σ_{j<t} γ_t α_{t,j} (u_t·s_j − δ_t) k_j."""
    pid_m, pid_b = tl.program_id(0), tl.program_id(1)
    if REV:
        pid_m = tl.num_programs(0) - 1 - pid_m
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
def _dk_kernel(Q, K, LSE, G, SV, U, DELTA, DKo, DQo, T, scale, D, DQ, BQ: tl.constexpr, BDP: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr, WITH_DQ: tl.constexpr):
    """dk_j = scale Σ_{t>j} γ_t α_{t,j} (u_t·s_j − δ_t) q_t. WITH_DQ (FUSED_DQDK): each causal tile also adds
    its dq share to DQo (zeroed, fp32) with atomics, so the scores and u·s are computed once, not per kernel."""
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
        dlt = (gam[None, :] * pt * (dpt - delta[None, :])).to(k.dtype)
        acc += tl.dot(dlt, tl.trans(qt), input_precision=PREC)
        if WITH_DQ:
            dq_part = tl.dot(tl.trans(dlt), k, input_precision=PREC)
            tl.atomic_add(DQo + pid_b * T * DQ + rows[:, None] * DQ + dq[None, :], dq_part, mask=dq[None, :] < DQ,
                          sem="relaxed")
    tl.store(DKo + pid_b * T * DQ + cols[:, None] * DQ + dq[None, :], acc, mask=dq[None, :] < DQ)


@triton.jit
def _leaf_step_kernel(A, X, Y, G, OUT, LO, T, NL, NLZ, leaf0, L, D, BM: tl.constexpr, BK: tl.constexpr,
                      BD: tl.constexpr, TRANS: tl.constexpr, HAS_X: tl.constexpr, GAIN_Y: tl.constexpr,
                      ACCUM: tl.constexpr, HAS_LO: tl.constexpr, GAIN_LO: tl.constexpr, PREC: tl.constexpr):
    """One leaf-sized triangular product per leaf i (= leaf0 + program_id(2) % NLZ), A: [B, NL, L, L] fp32:
    OUT[i rows] (+)= A_i (X + (G ⊙) Y)[i rows], A_iᵀ when TRANS (A_i lower triangular, so only the tiles
    on and below (above) the diagonal are read); LO[b] = OUT rows (times G when GAIN_LO) in LO's dtype."""
    pid_m, pid_d, pid_z = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b = pid_z // NLZ
    i = leaf0 + pid_z % NLZ
    m = pid_m * BM + tl.arange(0, BM)
    dcols = pid_d * BD + tl.arange(0, BD)
    dmask = dcols[None, :] < D
    a_base = A + (b * NL + i) * L * L
    row_base = b * T + i * L  # row index of this leaf's first row in the [B, T, ·] tensors
    if TRANS:
        lo, hi = pid_m * BM, L
    else:
        lo, hi = 0, (pid_m + 1) * BM
    acc = tl.zeros([BM, BD], tl.float32)
    for k0 in range(lo, hi, BK):
        ks = k0 + tl.arange(0, BK)
        if TRANS:
            a = tl.load(a_base + ks[None, :] * L + m[:, None])
        else:
            a = tl.load(a_base + m[:, None] * L + ks[None, :])
        x = tl.load(Y + (row_base + ks)[:, None] * D + dcols[None, :], mask=dmask, other=0.0)
        if GAIN_Y:
            x = x * tl.load(G + row_base + ks)[:, None]
        if HAS_X:
            x += tl.load(X + (row_base + ks)[:, None] * D + dcols[None, :], mask=dmask, other=0.0)
        acc += tl.dot(a, x, input_precision=PREC)
    op = OUT + (row_base + m)[:, None] * D + dcols[None, :]
    if ACCUM:
        acc += tl.load(op, mask=dmask, other=0.0)
    tl.store(op, acc, mask=dmask)
    if HAS_LO:
        if GAIN_LO:
            acc = acc * tl.load(G + row_base + m)[:, None]
        lp = LO + (b * L + m)[:, None] * D + dcols[None, :]
        tl.store(lp, acc.to(LO.dtype.element_ty), mask=dmask)


@triton.jit
def _leaf_p_kernel(Q, K, LSE, G, P, M, T, NL, L, scale, DQ, BQ: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                   PREC: tl.constexpr):
    """P_I = exp(ℓ − lse) on the strict lower part of each leaf (0 elsewhere) and M_I = I − γ P_I, fp32."""
    pid_m, pid_n, pid_z = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b = pid_z // NL
    i = pid_z % NL
    lm = pid_m * BM + tl.arange(0, BM)
    ln = pid_n * BN + tl.arange(0, BN)
    dq = tl.arange(0, BQ)
    q = _load_rows(Q + b * T * DQ, i * L + lm, dq, DQ)
    kt = _load_cols(K + b * T * DQ, i * L + ln, dq, DQ)
    lse = tl.load(LSE + b * T + i * L + lm)
    sc = tl.dot(q, kt, input_precision=PREC) * scale - lse[:, None]
    p = tl.where(ln[None, :] < lm[:, None], tl.exp(tl.minimum(sc, 0.0)), 0.0)  # strict past: ℓ − lse ≤ 0
    gam = tl.load(G + b * T + i * L + lm)
    out = (pid_z * L + lm)[:, None] * L + ln[None, :]
    tl.store(P + out, p)
    tl.store(M + out, tl.where(ln[None, :] == lm[:, None], 1.0, 0.0) - gam[:, None] * p)


def _p2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


def _fit(bm: int, leaf: int) -> int:
    """The largest power-of-two tile ≤ bm that divides the leaf (every row count here is a multiple of it)."""
    while leaf % bm:
        bm //= 2
    return bm


_SMS: dict = {}


def _sms(x: torch.Tensor) -> int:
    if not x.is_cuda:
        return 132
    dev = x.device.index or 0
    if dev not in _SMS:
        _SMS[dev] = torch.cuda.get_device_properties(dev).multi_processor_count
    return _SMS[dev]


def _split(programs: int, loop: int, x: torch.Tensor) -> int:
    """Key (row) ranges per push program: the power of two dividing the loop that minimises waves × (loop
    iterations per program + SPLIT_ATOMIC_COST when split), so a push of few programs fills every SM."""
    if not PUSH_SPLIT:
        return 1
    sms, best, best_cost = _sms(x), 1, float(-(-programs // _sms(x)) * loop)
    split = 2
    while loop % split == 0:
        cost = -(-programs * split // sms) * (loop / split + SPLIT_ATOMIC_COST)
        if cost < best_cost:
            best, best_cost = split, cost
        split *= 2
    return best


def _tri_inverse(m: torch.Tensor, base: int) -> torch.Tensor:
    """Inverse of unit lower triangular matrices [..., L, L]: one batched trsm (base 0 or L ≤ base), else both
    diagonal halves at once by recursion and the corner block by two batched GEMMs."""
    size = m.shape[-1]
    half = size // 2
    if not base or size <= base or half % 16:
        eye = torch.eye(size, dtype=m.dtype, device=m.device)
        return torch.linalg.solve_triangular(m, eye.expand_as(m), upper=False, unitriangular=True)
    inv_d = _tri_inverse(torch.stack([m[..., :half, :half], m[..., half:, half:]]), base)
    out = torch.zeros_like(m)
    out[..., :half, :half] = inv_d[0]
    out[..., half:, half:] = inv_d[1]
    out[..., half:, :half] = -(inv_d[1] @ m[..., half:, :half]) @ inv_d[0]
    return out


class TritonKernels(TorchKernels):
    """The kernel set of `blocked._BlockedSolve` on Triton (same signatures as `blocked.TorchKernels`; the leaf
    hooks fall back to PyTorch unless FUSED_STEP / TRITON_LEAVES)."""

    @staticmethod
    def _cfg(q: torch.Tensor, name: str, leaf: int) -> tuple[dict, dict]:
        """(tile constexprs, launch options) of one kernel."""
        wide = q.dtype == torch.float32 or q.shape[-1] > 256
        prec = "tf32x3" if q.dtype == torch.float32 else "tf32"
        c = CFG[name]
        if wide:
            return dict(BM=32, BN=32, PREC=prec), dict(num_warps=4, **({} if c["num_stages"] is None else
                                                                        {"num_stages": c["num_stages"]}))
        bm, bn = _fit(c["BM"], leaf), _fit(c["BN"], leaf)
        # the causal loops step from one tile's edge by the other tile: lse/dq need BN | BM, dk needs BM | BN
        if name in ("lse", "dq"):
            bn = min(bn, bm)
        elif name in ("dk", "dqdk"):
            bm = min(bm, bn)
        tiles = dict(BM=bm, BN=bn, PREC=prec)
        opts = {"num_warps": c["num_warps"]}
        if c["num_stages"] is not None:
            opts["num_stages"] = c["num_stages"]
        return tiles, opts

    @classmethod
    def lse(cls, q, k, scale, block):
        b, t, dq = q.shape
        tiles, opts = cls._cfg(q, "lse", block)
        out = torch.empty(b, t, device=q.device, dtype=torch.float32)
        _lse_kernel[(t // tiles["BM"], b)](q, k, out, t, scale, dq, BQ=_p2(dq), **tiles, REV=LONGEST_FIRST, **opts)
        return out

    @classmethod
    def fwd_update(cls, q, k, lse, s_leaf, h, row0, key0, scale):
        b, t, dq = q.shape
        d, leaf = h.shape[-1], s_leaf.shape[1]
        tiles, opts = cls._cfg(q, "push", leaf)
        bd = min(BD_MAX, _p2(d))
        s_leaf = s_leaf.to(q.dtype)
        rows = (t - row0) // tiles["BM"]
        split = _split(rows * triton.cdiv(d, bd) * b, leaf // tiles["BN"], q)
        grid = (rows, triton.cdiv(d, bd) * split, b)
        _fwd_update_kernel[grid](q, k, lse, s_leaf, h, t, row0, key0, leaf, scale, d, dq, BQ=_p2(dq), BD=bd,
                                 **tiles, SPLIT=split, ATOMIC=split > 1, **opts)

    @classmethod
    def bwd_update(cls, q, k, lse, w_leaf, acc, q0, scale):
        b, t, dq = q.shape
        d, leaf = acc.shape[-1], w_leaf.shape[1]
        tiles, opts = cls._cfg(q, "push", leaf)
        bd = min(BD_MAX, _p2(d))
        w_leaf = w_leaf.to(k.dtype)
        keys = q0 // tiles["BN"]
        split = _split(keys * triton.cdiv(d, bd) * b, leaf // tiles["BM"], q)
        grid = (keys, triton.cdiv(d, bd) * split, b)
        _bwd_update_kernel[grid](q, k, lse, w_leaf, acc, t, q0, leaf, scale, d, dq, BQ=_p2(dq), BD=bd, **tiles,
                                 SPLIT=split, ATOMIC=split > 1, **opts)

    @classmethod
    def dqdk(cls, q, k, lse, gamma, s, u, delta, scale, block):
        b, t, dq = q.shape
        d = s.shape[-1]
        dqo = torch.empty(b, t, dq, device=q.device, dtype=torch.float32)
        dko = torch.empty_like(dqo)
        s, u = s.to(q.dtype), u.to(q.dtype)  # the products' operand dtype (a no-op for fp32)
        key = (q.dtype, dq, d, block)
        if FUSED_DQDK and _FUSED_FITS.get(key, True):
            dqo.zero_()
            tiles, opts = cls._cfg(q, "dqdk", block)
            try:
                _dk_kernel[(t // tiles["BN"], b)](q, k, lse, gamma, s, u, delta, dko, dqo, t, scale, d, dq,
                                                  BQ=_p2(dq), BDP=_p2(d), **tiles, WITH_DQ=True, **opts)
                return dqo, dko
            except OutOfResources:  # refused before it ran (fp32 at D 256 needs 240 KB): the two kernels
                _FUSED_FITS[key] = False
        tiles, opts = cls._cfg(q, "dq", block)
        _dq_kernel[(t // tiles["BM"], b)](q, k, lse, gamma, s, u, delta, dqo, t, scale, d, dq, BQ=_p2(dq),
                                          BDP=_p2(d), **tiles, REV=LONGEST_FIRST, **opts)
        tiles, opts = cls._cfg(q, "dk", block)
        _dk_kernel[(t // tiles["BN"], b)](q, k, lse, gamma, s, u, delta, dko, None, t, scale, d, dq, BQ=_p2(dq),
                                          BDP=_p2(d), **tiles, WITH_DQ=False, **opts)
        return dqo, dko

    # the leaf hooks (blocked.TorchKernels has the PyTorch versions)

    @classmethod
    def leaves(cls, q, k, gamma, lse, scale, leaf, work):
        p, inv = cls._leaves(q, k, gamma, lse, scale, leaf, work)
        return p, inv.contiguous() if FUSED_STEP else inv  # the fused step reads rows (trsm may answer columns)

    @staticmethod
    def _leaves(q, k, gamma, lse, scale, leaf, work):
        if not TRITON_LEAVES:
            if INV_BASE:
                p, _ = _leaves(q.to(work), k.to(work), gamma, lse, scale, leaf, inverse=False)
                m = torch.eye(leaf, dtype=p.dtype, device=p.device) - gamma.view(p.shape[:-1])[..., None] * p
                return p, _tri_inverse(m, INV_BASE)
            return TorchKernels.leaves(q, k, gamma, lse, scale, leaf, work)
        b, t, dq = q.shape
        n = t // leaf
        p = torch.empty(b, n, leaf, leaf, device=q.device, dtype=torch.float32)
        m = torch.empty_like(p)
        bm = _fit(64, leaf)
        _leaf_p_kernel[(leaf // bm, leaf // bm, b * n)](q, k, lse, gamma, p, m, t, n, leaf, scale, dq, BQ=_p2(dq),
                                                        BM=bm, BN=bm,
                                                        PREC="tf32x3" if q.dtype == torch.float32 else "tf32",
                                                        num_warps=4)
        return p, _tri_inverse(m, INV_BASE)

    @staticmethod
    def _step(a, x, y, g, out, lo, leaf0: int, nlz: int, trans: bool, gain_y: bool, accum: bool, gain_lo: bool):
        b, nl, leaf, _ = a.shape
        d = out.shape[-1]
        c = STEP_CFG
        bm, bk = _fit(c["BM"], leaf), _fit(c["BK"], leaf)
        bk = min(bk, bm)
        bd = min(c["BD"], _p2(d))
        a = a.contiguous()  # a no-op: `leaves` answers contiguous blocks
        _leaf_step_kernel[(leaf // bm, triton.cdiv(d, bd), b * nlz)](
            a, y if x is None else x, y, g, out, out if lo is None else lo, out.shape[1], nl, nlz, leaf0, leaf, d,
            BM=bm, BK=bk, BD=bd, TRANS=trans, HAS_X=x is not None, GAIN_Y=gain_y, ACCUM=accum, HAS_LO=lo is not None,
            GAIN_LO=gain_lo, PREC="tf32x3", num_warps=c["num_warps"], num_stages=c["num_stages"])

    def __init__(self, push_dtype: torch.dtype):
        self.push_dtype = push_dtype  # q's dtype: the pushes' operand dtype

    def fwd_step(self, inv, i, fw, gw, h, s):
        if not FUSED_STEP:
            return TorchKernels.fwd_step(inv, i, fw, gw, h, s)
        lo = torch.empty(s.shape[0], inv.shape[-1], s.shape[-1], device=s.device, dtype=self.push_dtype)
        self._step(inv, fw, h, gw, s, lo, i, 1, trans=False, gain_y=True, accum=False, gain_lo=False)
        return lo

    def bwd_step(self, inv, i, g, gw, acc, u):
        if not FUSED_STEP:
            return TorchKernels.bwd_step(inv, i, g, gw, acc, u)
        lo = torch.empty(u.shape[0], inv.shape[-1], u.shape[-1], device=u.device, dtype=self.push_dtype)
        self._step(inv, g, acc, gw, u, lo, i, 1, trans=True, gain_y=False, accum=False, gain_lo=True)
        return lo

    @classmethod
    def add_intra(cls, p_leaf, s, h):
        if not TRITON_LEAVES:
            return TorchKernels.add_intra(p_leaf, s, h)
        cls._step(p_leaf, None, s, s, h, None, 0, p_leaf.shape[1], trans=False, gain_y=False, accum=True,
                  gain_lo=False)


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
    return _BlockedSolve.apply(f, qb, kb, gamma, scale, leaf, TritonKernels(kdtype), kdtype)
