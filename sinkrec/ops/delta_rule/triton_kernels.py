"""Triton kernels of the chunked gated delta rule (chunk C = 64), forward and backward.

Notation of chunked.py, per chunk: G = cumsum(g), γ = exp(G), D[t, i] = γ_t/γ_i (i ≤ t),
A = strict(β_t k_tᵀk_i D[t, i]), T = (I + A)⁻¹, U = T(β⊙V), Wk = T(β⊙γ⊙K), K̃ = (γ_C/γ)⊙K,
W = U − Wk h, h' = γ_C h + K̃ᵀW, o = (q⊙γ)h + (qkᵀ⊙D)W   (q already scaled).

Forward:  `prep_fwd` (per chunk: G, T, U, Wk, K̃, γ_C) → `state_fwd` (sequential over chunks, h in
registers) → `output_fwd` (per chunk).
Backward: `output_bwd` (per chunk: dq, the output's parts of dk and dG, dW and dh from the
output) → `state_bwd` (reverse over chunks) → `prep_bwd` (per chunk: everything through T).

Inputs use the [B, T, H, D] layout directly (rows past T read as zeros: g = β = 0 writes and decays
nothing); chunk-level tensors are fp32 [B·H, N, C, ·]. T is inverted per 16×16 diagonal block by
forward substitution, the off-diagonal blocks by T_ij = −T_ii Σ_m A_im T_mj.
All arithmetic is fp32; `DOT` picks "ieee" (exact fp32) or "tf32" matrix products.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _rows(ptr, n, j, T, H, h, b, D: tl.constexpr, BD: tl.constexpr):
    """Rows t = 64n + 16j … +15 of a [B, T, H, D] tensor as fp32 [16, BD] (zeros outside)."""
    r = tl.arange(0, 16)
    c = tl.arange(0, BD)
    t = n * 64 + j * 16 + r
    m = (t[:, None] < T) & (c[None, :] < D)
    return tl.load(ptr + ((b * T + t[:, None]) * H + h) * D + c[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _gates(ptr, n, j, T, H, h, b):
    """Rows of a [B, T, H] gate tensor as fp32 [16] (zero outside)."""
    t = n * 64 + j * 16 + tl.arange(0, 16)
    return tl.load(ptr + (b * T + t) * H + h, mask=t < T, other=0.0).to(tl.float32)


@triton.jit
def _inv16(a):
    """(I + a)⁻¹ for a strictly lower-triangular [16, 16] block, by forward substitution."""
    r = tl.arange(0, 16)
    x = tl.where(r[:, None] == r[None, :], 1.0, 0.0)
    for i in tl.static_range(1, 16):
        a_i = tl.sum(tl.where(r[:, None] == i, a, 0.0), 0)  # row i of a
        x = tl.where(r[:, None] == i, x - tl.sum(a_i[:, None] * x, 0)[None, :], x)
    return x


@triton.jit
def _a_block(ki, kj, bi, gi, gj, DIAG: tl.constexpr, DOT: tl.constexpr):
    """Block (i, j) of A: β_t k_tᵀk_s exp(G_t − G_s), strictly lower on the diagonal."""
    r = tl.arange(0, 16)
    kk = tl.dot(ki, tl.trans(kj), input_precision=DOT)
    if DIAG:
        lower = r[:, None] > r[None, :]
        return tl.where(lower, bi[:, None] * kk * tl.exp(tl.where(lower, gi[:, None] - gj[None, :], 0.0)), 0.0)
    return bi[:, None] * kk * tl.exp(gi[:, None] - gj[None, :])


@triton.jit
def _store_block(ptr, x, i, j, W: tl.constexpr, BW: tl.constexpr, COLS: tl.constexpr):
    """Store a [16, BW] block at rows 16i.., columns (16j.. if COLS else 0..) of a row-major [64, W]."""
    r = tl.arange(0, 16)
    c = tl.arange(0, BW)
    col = j * 16 + c if COLS else c
    tl.store(ptr + (i * 16 + r[:, None]) * W + col[None, :], x, mask=c[None, :] < W)


@triton.jit
def prep_fwd(K, V, G_IN, BETA, TT, U, WK, KT, GC, DC, T, N, H,
             DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    chunk = bh * N + n
    k1 = _rows(K, n, 0, T, H, h, b, DK, BK)
    k2 = _rows(K, n, 1, T, H, h, b, DK, BK)
    k3 = _rows(K, n, 2, T, H, h, b, DK, BK)
    k4 = _rows(K, n, 3, T, H, h, b, DK, BK)
    g1 = _gates(G_IN, n, 0, T, H, h, b)
    g2 = _gates(G_IN, n, 1, T, H, h, b)
    g3 = _gates(G_IN, n, 2, T, H, h, b)
    g4 = _gates(G_IN, n, 3, T, H, h, b)
    b1 = _gates(BETA, n, 0, T, H, h, b)
    b2 = _gates(BETA, n, 1, T, H, h, b)
    b3 = _gates(BETA, n, 2, T, H, h, b)
    b4 = _gates(BETA, n, 3, T, H, h, b)
    # cumulative log decay across the four blocks
    G1 = tl.cumsum(g1, 0)
    G2 = tl.cumsum(g2, 0) + tl.sum(g1, 0)
    G3 = tl.cumsum(g3, 0) + tl.sum(g1, 0) + tl.sum(g2, 0)
    G4 = tl.cumsum(g4, 0) + tl.sum(g1, 0) + tl.sum(g2, 0) + tl.sum(g3, 0)
    Gtot = tl.sum(g1, 0) + tl.sum(g2, 0) + tl.sum(g3, 0) + tl.sum(g4, 0)
    r = tl.arange(0, 16)
    tl.store(GC + chunk * 64 + r, G1)
    tl.store(GC + chunk * 64 + 16 + r, G2)
    tl.store(GC + chunk * 64 + 32 + r, G3)
    tl.store(GC + chunk * 64 + 48 + r, G4)
    tl.store(DC + chunk, tl.exp(Gtot))
    # T = (I + A)⁻¹ by blocks
    T11 = _inv16(_a_block(k1, k1, b1, G1, G1, True, DOT))
    T22 = _inv16(_a_block(k2, k2, b2, G2, G2, True, DOT))
    T33 = _inv16(_a_block(k3, k3, b3, G3, G3, True, DOT))
    T44 = _inv16(_a_block(k4, k4, b4, G4, G4, True, DOT))
    A21 = _a_block(k2, k1, b2, G2, G1, False, DOT)
    A31 = _a_block(k3, k1, b3, G3, G1, False, DOT)
    A32 = _a_block(k3, k2, b3, G3, G2, False, DOT)
    A41 = _a_block(k4, k1, b4, G4, G1, False, DOT)
    A42 = _a_block(k4, k2, b4, G4, G2, False, DOT)
    A43 = _a_block(k4, k3, b4, G4, G3, False, DOT)
    T21 = -tl.dot(T22, tl.dot(A21, T11, input_precision=DOT), input_precision=DOT)
    T32 = -tl.dot(T33, tl.dot(A32, T22, input_precision=DOT), input_precision=DOT)
    T43 = -tl.dot(T44, tl.dot(A43, T33, input_precision=DOT), input_precision=DOT)
    T31 = -tl.dot(T33, tl.dot(A31, T11, input_precision=DOT) + tl.dot(A32, T21, input_precision=DOT),
                  input_precision=DOT)
    T42 = -tl.dot(T44, tl.dot(A42, T22, input_precision=DOT) + tl.dot(A43, T32, input_precision=DOT),
                  input_precision=DOT)
    T41 = -tl.dot(T44, tl.dot(A41, T11, input_precision=DOT) + tl.dot(A42, T21, input_precision=DOT)
                  + tl.dot(A43, T31, input_precision=DOT), input_precision=DOT)
    tt = TT + chunk * 64 * 64
    z = tl.zeros([16, 16], dtype=tl.float32)
    _store_block(tt, T11, 0, 0, 64, 16, True)
    _store_block(tt, z, 0, 1, 64, 16, True)
    _store_block(tt, z, 0, 2, 64, 16, True)
    _store_block(tt, z, 0, 3, 64, 16, True)
    _store_block(tt, T21, 1, 0, 64, 16, True)
    _store_block(tt, T22, 1, 1, 64, 16, True)
    _store_block(tt, z, 1, 2, 64, 16, True)
    _store_block(tt, z, 1, 3, 64, 16, True)
    _store_block(tt, T31, 2, 0, 64, 16, True)
    _store_block(tt, T32, 2, 1, 64, 16, True)
    _store_block(tt, T33, 2, 2, 64, 16, True)
    _store_block(tt, z, 2, 3, 64, 16, True)
    _store_block(tt, T41, 3, 0, 64, 16, True)
    _store_block(tt, T42, 3, 1, 64, 16, True)
    _store_block(tt, T43, 3, 2, 64, 16, True)
    _store_block(tt, T44, 3, 3, 64, 16, True)
    # Wk = T(β⊙γ⊙K) and K̃ = (γ_C/γ)⊙K
    e1 = (b1 * tl.exp(G1))[:, None] * k1
    e2 = (b2 * tl.exp(G2))[:, None] * k2
    e3 = (b3 * tl.exp(G3))[:, None] * k3
    e4 = (b4 * tl.exp(G4))[:, None] * k4
    wk = WK + chunk * 64 * DK
    _store_block(wk, tl.dot(T11, e1, input_precision=DOT), 0, 0, DK, BK, False)
    _store_block(wk, tl.dot(T21, e1, input_precision=DOT) + tl.dot(T22, e2, input_precision=DOT), 1, 0, DK, BK, False)
    _store_block(wk, tl.dot(T31, e1, input_precision=DOT) + tl.dot(T32, e2, input_precision=DOT)
                 + tl.dot(T33, e3, input_precision=DOT), 2, 0, DK, BK, False)
    _store_block(wk, tl.dot(T41, e1, input_precision=DOT) + tl.dot(T42, e2, input_precision=DOT)
                 + tl.dot(T43, e3, input_precision=DOT) + tl.dot(T44, e4, input_precision=DOT), 3, 0, DK, BK, False)
    kt = KT + chunk * 64 * DK
    _store_block(kt, tl.exp(Gtot - G1)[:, None] * k1, 0, 0, DK, BK, False)
    _store_block(kt, tl.exp(Gtot - G2)[:, None] * k2, 1, 0, DK, BK, False)
    _store_block(kt, tl.exp(Gtot - G3)[:, None] * k3, 2, 0, DK, BK, False)
    _store_block(kt, tl.exp(Gtot - G4)[:, None] * k4, 3, 0, DK, BK, False)
    # U = T(β⊙V)
    v1 = b1[:, None] * _rows(V, n, 0, T, H, h, b, DV, BV)
    v2 = b2[:, None] * _rows(V, n, 1, T, H, h, b, DV, BV)
    v3 = b3[:, None] * _rows(V, n, 2, T, H, h, b, DV, BV)
    v4 = b4[:, None] * _rows(V, n, 3, T, H, h, b, DV, BV)
    u = U + chunk * 64 * DV
    _store_block(u, tl.dot(T11, v1, input_precision=DOT), 0, 0, DV, BV, False)
    _store_block(u, tl.dot(T21, v1, input_precision=DOT) + tl.dot(T22, v2, input_precision=DOT), 1, 0, DV, BV, False)
    _store_block(u, tl.dot(T31, v1, input_precision=DOT) + tl.dot(T32, v2, input_precision=DOT)
                 + tl.dot(T33, v3, input_precision=DOT), 2, 0, DV, BV, False)
    _store_block(u, tl.dot(T41, v1, input_precision=DOT) + tl.dot(T42, v2, input_precision=DOT)
                 + tl.dot(T43, v3, input_precision=DOT) + tl.dot(T44, v4, input_precision=DOT), 3, 0, DV, BV, False)


@triton.jit
def state_fwd(U, WK, KT, DC, H0, W, HS, N, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr,
              DOT: tl.constexpr):
    """W_i = U_i − Wk_i h_i, h_{i+1} = d_i h_i + K̃_iᵀ W_i; one program per (b·h, block of Dv columns)."""
    bh = tl.program_id(0)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rc = tl.arange(0, 64)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    h = tl.load(H0 + bh * DK * DV + hv, mask=vm, other=0.0)
    for i in tl.range(0, N, num_stages=2):
        chunk = bh * N + i
        tl.store(HS + (bh * (N + 1) + i) * DK * DV + hv, h, mask=vm)
        u = tl.load(U + chunk * 64 * DV + rc[:, None] * DV + rv[None, :], mask=vm, other=0.0)
        wk = tl.load(WK + chunk * 64 * DK + rc[:, None] * DK + rk[None, :])
        kt = tl.load(KT + chunk * 64 * DK + rc[:, None] * DK + rk[None, :])
        d = tl.load(DC + chunk)
        w = u - tl.dot(wk, h, input_precision=DOT)
        h = d * h + tl.dot(tl.trans(kt), w, input_precision=DOT)
        tl.store(W + chunk * 64 * DV + rc[:, None] * DV + rv[None, :], w, mask=vm)
    tl.store(HS + (bh * (N + 1) + N) * DK * DV + hv, h, mask=vm)


@triton.jit
def _chunk_rows(ptr, n, T, H, h, b, D: tl.constexpr, BD: tl.constexpr):
    """All 64 rows of chunk n of a [B, T, H, D] tensor as fp32 [64, BD]."""
    r = tl.arange(0, 64)
    c = tl.arange(0, BD)
    t = n * 64 + r
    m = (t[:, None] < T) & (c[None, :] < D)
    return tl.load(ptr + ((b * T + t[:, None]) * H + h) * D + c[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, n, T, H, h, b, D: tl.constexpr, BD: tl.constexpr):
    r = tl.arange(0, 64)
    c = tl.arange(0, BD)
    t = n * 64 + r
    m = (t[:, None] < T) & (c[None, :] < D)
    tl.store(ptr + ((b * T + t[:, None]) * H + h) * D + c[None, :], x.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _chunk_tile(ptr, chunk, D: tl.constexpr, BD: tl.constexpr):
    """A chunk's [64, D] fp32 tile of a [B·H, N, 64, D] tensor, padded to BD columns."""
    r = tl.arange(0, 64)
    c = tl.arange(0, BD)
    return tl.load(ptr + chunk * 64 * D + r[:, None] * D + c[None, :], mask=c[None, :] < D, other=0.0)


@triton.jit
def _state_tile(ptr, bh, i, N, DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    rk = tl.arange(0, BK)
    rv = tl.arange(0, BV)
    m = (rk[:, None] < DK) & (rv[None, :] < DV)
    return tl.load(ptr + (bh * (N + 1) + i) * DK * DV + rk[:, None] * DV + rv[None, :], mask=m, other=0.0)


@triton.jit
def _decay(G):
    """D[t, i] = exp(G_t − G_i) for i ≤ t, else 0."""
    r = tl.arange(0, 64)
    causal = r[:, None] >= r[None, :]
    return tl.where(causal, tl.exp(tl.where(causal, G[:, None] - G[None, :], 0.0)), 0.0)


@triton.jit
def output_fwd(Q, K, GC, HS, W, O, scale, T, N, H, DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr,
               BV: tl.constexpr, DOT: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    chunk = bh * N + n
    q = _chunk_rows(Q, n, T, H, h, b, DK, BK) * scale
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    G = tl.load(GC + chunk * 64 + tl.arange(0, 64))
    state = _state_tile(HS, bh, n, N, DK, DV, BK, BV)
    w = _chunk_tile(W, chunk, DV, BV)
    p = tl.dot(q, tl.trans(k), input_precision=DOT) * _decay(G)
    o = tl.dot(q * tl.exp(G)[:, None], state, input_precision=DOT) + tl.dot(p, w, input_precision=DOT)
    _store_rows(O, o, n, T, H, h, b, DV, BV)


@triton.jit
def output_bwd(Q, K, GC, HS, W, DO, DQ, DKO, DGO, DW, DHS, scale, T, N, H, DK: tl.constexpr, DV: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    """Gradients through o = (q⊙γ)h + (qkᵀ⊙D)W: dq (final), the output's parts of dk and dG, dW, dh."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    chunk = bh * N + n
    q = _chunk_rows(Q, n, T, H, h, b, DK, BK) * scale
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    do = _chunk_rows(DO, n, T, H, h, b, DV, BV)
    G = tl.load(GC + chunk * 64 + tl.arange(0, 64))
    gamma = tl.exp(G)
    state = _state_tile(HS, bh, n, N, DK, DV, BK, BV)
    w = _chunk_tile(W, chunk, DV, BV)
    decay = _decay(G)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT)
    p = qk * decay
    qg = q * gamma[:, None]
    rk = tl.arange(0, BK)
    rv = tl.arange(0, BV)
    tl.store(DHS + (bh * (N + 1) + n) * DK * DV + rk[:, None] * DV + rv[None, :],
             tl.dot(tl.trans(qg), do, input_precision=DOT), mask=(rk[:, None] < DK) & (rv[None, :] < DV))
    r = tl.arange(0, 64)
    tl.store(DW + chunk * 64 * DV + r[:, None] * DV + rv[None, :], tl.dot(tl.trans(p), do, input_precision=DOT),
             mask=rv[None, :] < DV)
    s = tl.dot(do, tl.trans(w), input_precision=DOT) * decay
    doh = tl.dot(do, tl.trans(state), input_precision=DOT)
    dq = tl.dot(s, k, input_precision=DOT) + gamma[:, None] * doh
    _store_rows(DQ, dq * scale, n, T, H, h, b, DK, BK)
    dk = tl.dot(tl.trans(s), q, input_precision=DOT)
    tl.store(DKO + chunk * 64 * DK + r[:, None] * DK + rk[None, :], dk, mask=rk[None, :] < DK)
    x = s * qk
    tl.store(DGO + chunk * 64 + r, tl.sum(x, 1) - tl.sum(x, 0) + tl.sum(qg * doh, 1))


@triton.jit
def state_bwd(WK, KT, DC, W, HS, DW, DHS, DU, DWK, DKT, DD, DH0, N, NS, DK: tl.constexpr, DV: tl.constexpr,
              BS: tl.constexpr, DOT: tl.constexpr):
    """Reverse walk: dW_i = dW_i^ext + K̃_i g_{i+1}, g_i = dh_i^ext + d_i g_{i+1} − Wk_iᵀ dW_i, with
    g the gradient into the state; dK̃, dWk, dd are partial sums per Dv block (added up afterwards)."""
    bh = tl.program_id(0)
    vb = tl.program_id(1)
    rc = tl.arange(0, 64)
    rk = tl.arange(0, DK)
    rv = vb * BS + tl.arange(0, BS)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    gh = tl.load(DHS + (bh * (N + 1) + N) * DK * DV + hv, mask=vm, other=0.0)
    for j in tl.range(0, N, num_stages=2):
        i = N - 1 - j
        chunk = bh * N + i
        cv = chunk * 64 * DV + rc[:, None] * DV + rv[None, :]
        ck = chunk * 64 * DK + rc[:, None] * DK + rk[None, :]
        h = tl.load(HS + (bh * (N + 1) + i) * DK * DV + hv, mask=vm, other=0.0)
        w = tl.load(W + cv, mask=vm, other=0.0)
        kt = tl.load(KT + ck)
        wk = tl.load(WK + ck)
        d = tl.load(DC + chunk)
        dw = tl.load(DW + cv, mask=vm, other=0.0) + tl.dot(kt, gh, input_precision=DOT)
        part = (bh * NS + vb) * N + i
        tl.store(DU + cv, dw, mask=vm)
        tl.store(DKT + part * 64 * DK + rc[:, None] * DK + rk[None, :], tl.dot(w, tl.trans(gh), input_precision=DOT))
        tl.store(DWK + part * 64 * DK + rc[:, None] * DK + rk[None, :], -tl.dot(dw, tl.trans(h), input_precision=DOT))
        tl.store(DD + part, tl.sum(tl.sum(gh * h, 1), 0))
        dhs = tl.load(DHS + (bh * (N + 1) + i) * DK * DV + hv, mask=vm, other=0.0)
        gh = dhs + d * gh - tl.dot(tl.trans(wk), dw, input_precision=DOT)
    tl.store(DH0 + bh * DK * DV + hv, gh, mask=vm)


@triton.jit
def prep_bwd(K, V, BETA, GC, TT, DU, DWK, DKT, DD, DKO, DGO, DK_OUT, DV_OUT, DG_OUT, DB_OUT, T, N, H, NS,
             DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    """Gradients through T, U, Wk, K̃ and γ_C back to k, v, β and g (reverse cumsum of dG)."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    chunk = bh * N + n
    r = tl.arange(0, 64)
    t = n * 64 + r
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    v = _chunk_rows(V, n, T, H, h, b, DV, BV)
    beta = tl.load(BETA + (b * T + t) * H + h, mask=t < T, other=0.0).to(tl.float32)
    G = tl.load(GC + chunk * 64 + r)
    Gtot = tl.sum(tl.where(r == 63, G, 0.0), 0)
    gamma = tl.exp(G)
    tt = tl.load(TT + chunk * 64 * 64 + r[:, None] * 64 + r[None, :])
    du = _chunk_tile(DU, chunk, DV, BV)
    # partial sums over the state pass's Dv blocks
    dwk = tl.zeros([64, BK], dtype=tl.float32)
    dkt = tl.zeros([64, BK], dtype=tl.float32)
    for s in range(NS):
        part = (bh * NS + s) * N + n
        dwk += _chunk_tile(DWK, part, DK, BK)
        dkt += _chunk_tile(DKT, part, DK, BK)
    dd = tl.load(DD + chunk)  # summed over Dv blocks already
    vb = beta[:, None] * v
    kb = (beta * gamma)[:, None] * k
    u = tl.dot(tt, vb, input_precision=DOT)
    wk = tl.dot(tt, kb, input_precision=DOT)
    dvb = tl.dot(tl.trans(tt), du, input_precision=DOT)
    dkb = tl.dot(tl.trans(tt), dwk, input_precision=DOT)
    strict = r[:, None] > r[None, :]
    da = -(tl.dot(dvb, tl.trans(u), input_precision=DOT) + tl.dot(dkb, tl.trans(wk), input_precision=DOT))
    m = tl.where(strict, da * tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.0)), 0.0)
    kk = tl.dot(k, tl.trans(k), input_precision=DOT)
    y = m * kk * beta[:, None]  # dA ⊙ A
    mb = beta[:, None] * m
    ktail = tl.exp(Gtot - G)[:, None] * k
    dk = (_chunk_tile(DKO, chunk, DK, BK) + (beta * gamma)[:, None] * dkb + tl.dot(mb, k, input_precision=DOT)
          + tl.dot(tl.trans(mb), k, input_precision=DOT) + tl.exp(Gtot - G)[:, None] * dkt)
    dbeta = tl.sum(dvb * v, 1) + tl.sum(dkb * gamma[:, None] * k, 1) + tl.sum(m * kk, 1)
    r_tail = tl.sum(dkt * ktail, 1)
    dG = tl.load(DGO + chunk * 64 + r) + tl.sum(dkb * kb, 1) + tl.sum(y, 1) - tl.sum(y, 0) - r_tail
    dG += tl.where(r == 63, tl.sum(r_tail, 0) + dd * tl.exp(Gtot), 0.0)
    dg = tl.sum(dG, 0) - tl.cumsum(dG, 0) + dG  # g enters G_s for every s ≥ t
    _store_rows(DK_OUT, dk, n, T, H, h, b, DK, BK)
    _store_rows(DV_OUT, beta[:, None] * dvb, n, T, H, h, b, DV, BV)
    tl.store(DB_OUT + (b * T + t) * H + h, dbeta.to(DB_OUT.dtype.element_ty), mask=t < T)
    tl.store(DG_OUT + (b * T + t) * H + h, dg.to(DG_OUT.dtype.element_ty), mask=t < T)
