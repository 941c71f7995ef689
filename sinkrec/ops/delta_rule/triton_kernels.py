"""Triton kernels of the chunked gated delta rule (chunk C = 64), forward and backward.

Notation of chunked.py, per chunk: G = cumsum(g), γ = exp(G), D[t, i] = γ_t/γ_i (i ≤ t),
A = strict(β_t k_tᵀk_i D[t, i]), T = (I + A)⁻¹, U = T(β⊙V), Wk = T(β⊙γ⊙K), K̃ = (γ_C/γ)⊙K,
W = U − Wk h, o = (q⊙γ)h + (qkᵀ⊙D)W   (q already scaled),
h' = γ_C h + K̃ᵀW = M h + B  with  M = γ_C I − K̃ᵀWk,  B = K̃ᵀU.
The sequential part is thus one product per chunk, h' = M h + B (and g = dh_ext + Mᵀ g' backward);
every other product runs in kernels that are parallel over chunks.

Forward:  `prep_fwd` (per chunk: G, T, U, Wk, M, B) → `state_fwd` (sequential over chunks, h in
registers) → `output_fwd` (per chunk).
Backward: `output_bwd` (per chunk: dq, the output's parts of dk and dG, dW, and the output's
gradient into h) → `state_bwd` (reverse over chunks: total gradient into each state) →
`prep_bwd` (per chunk: dM = g'hᵀ, dB = g', and everything through T).

Inputs use the [B, T, H, D] layout directly (rows past T read as zeros: g = β = 0 writes and decays
nothing); chunk-level tensors are fp32 [B·H, N, C, ·]. T is inverted per 16×16 diagonal block by
forward substitution, the off-diagonal blocks by T_ij = −T_ii Σ_m A_im T_mj.
All arithmetic is fp32; `DOT` picks "tf32x3" (fp32-accurate, for fp32 inputs) or "tf32" matrix products.
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
def _program(N, H):
    """Coordinates of a chunk-parallel program (grid = (N, B·H)): chunk n, b·h, b, h, flat chunk index."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    return n, bh, bh // H, bh % H, bh * N + n


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
def prep_fwd(K, V, G_IN, BETA, TT, U, WK, MM, MT, BB, GC, T, N, H,
             DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    n, bh, b, h, chunk = _program(N, H)
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
    _store_block(tt, T11, 0, 0, 64, 16, True)
    _store_block(tt, T21, 1, 0, 64, 16, True)
    _store_block(tt, T22, 1, 1, 64, 16, True)
    _store_block(tt, T31, 2, 0, 64, 16, True)
    _store_block(tt, T32, 2, 1, 64, 16, True)
    _store_block(tt, T33, 2, 2, 64, 16, True)
    _store_block(tt, T41, 3, 0, 64, 16, True)
    _store_block(tt, T42, 3, 1, 64, 16, True)
    _store_block(tt, T43, 3, 2, 64, 16, True)
    _store_block(tt, T44, 3, 3, 64, 16, True)
    # Wk = T(β⊙γ⊙K), U = T(β⊙V), then M = γ_C I − Σ_j K̃_jᵀ Wk_j and B = Σ_j K̃_jᵀ U_j
    e1 = (b1 * tl.exp(G1))[:, None] * k1
    e2 = (b2 * tl.exp(G2))[:, None] * k2
    e3 = (b3 * tl.exp(G3))[:, None] * k3
    e4 = (b4 * tl.exp(G4))[:, None] * k4
    w1 = tl.dot(T11, e1, input_precision=DOT)
    w2 = tl.dot(T21, e1, input_precision=DOT) + tl.dot(T22, e2, input_precision=DOT)
    w3 = (tl.dot(T31, e1, input_precision=DOT) + tl.dot(T32, e2, input_precision=DOT)
          + tl.dot(T33, e3, input_precision=DOT))
    w4 = (tl.dot(T41, e1, input_precision=DOT) + tl.dot(T42, e2, input_precision=DOT)
          + tl.dot(T43, e3, input_precision=DOT) + tl.dot(T44, e4, input_precision=DOT))
    v1 = b1[:, None] * _rows(V, n, 0, T, H, h, b, DV, BV)
    v2 = b2[:, None] * _rows(V, n, 1, T, H, h, b, DV, BV)
    v3 = b3[:, None] * _rows(V, n, 2, T, H, h, b, DV, BV)
    v4 = b4[:, None] * _rows(V, n, 3, T, H, h, b, DV, BV)
    u1 = tl.dot(T11, v1, input_precision=DOT)
    u2 = tl.dot(T21, v1, input_precision=DOT) + tl.dot(T22, v2, input_precision=DOT)
    u3 = (tl.dot(T31, v1, input_precision=DOT) + tl.dot(T32, v2, input_precision=DOT)
          + tl.dot(T33, v3, input_precision=DOT))
    u4 = (tl.dot(T41, v1, input_precision=DOT) + tl.dot(T42, v2, input_precision=DOT)
          + tl.dot(T43, v3, input_precision=DOT) + tl.dot(T44, v4, input_precision=DOT))
    wk = WK + chunk * 64 * DK
    _store_block(wk, w1, 0, 0, DK, BK, False)
    _store_block(wk, w2, 1, 0, DK, BK, False)
    _store_block(wk, w3, 2, 0, DK, BK, False)
    _store_block(wk, w4, 3, 0, DK, BK, False)
    u = U + chunk * 64 * DV
    _store_block(u, u1, 0, 0, DV, BV, False)
    _store_block(u, u2, 1, 0, DV, BV, False)
    _store_block(u, u3, 2, 0, DV, BV, False)
    _store_block(u, u4, 3, 0, DV, BV, False)
    t1 = tl.trans(tl.exp(Gtot - G1)[:, None] * k1)
    t2 = tl.trans(tl.exp(Gtot - G2)[:, None] * k2)
    t3 = tl.trans(tl.exp(Gtot - G3)[:, None] * k3)
    t4 = tl.trans(tl.exp(Gtot - G4)[:, None] * k4)
    rk = tl.arange(0, BK)
    rv = tl.arange(0, BV)
    mk = (rk[:, None] < DK) & (rk[None, :] < DK)
    eye = tl.where(rk[:, None] == rk[None, :], tl.exp(Gtot), 0.0)
    m = eye - (tl.dot(t1, w1, input_precision=DOT) + tl.dot(t2, w2, input_precision=DOT)
               + tl.dot(t3, w3, input_precision=DOT) + tl.dot(t4, w4, input_precision=DOT))
    tl.store(MM + chunk * DK * DK + rk[:, None] * DK + rk[None, :], m, mask=mk)
    tl.store(MT + chunk * DK * DK + rk[None, :] * DK + rk[:, None], m, mask=mk)  # Mᵀ for the reverse walk
    bb = (tl.dot(t1, u1, input_precision=DOT) + tl.dot(t2, u2, input_precision=DOT)
          + tl.dot(t3, u3, input_precision=DOT) + tl.dot(t4, u4, input_precision=DOT))
    tl.store(BB + chunk * DK * DV + rk[:, None] * DV + rv[None, :], bb, mask=(rk[:, None] < DK) & (rv[None, :] < DV))


@triton.jit
def state_fwd(MM, BB, H0, HS, N, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, DOT: tl.constexpr):
    """h_{i+1} = M_i h_i + B_i, storing every h_i; one program per (b·h, block of Dv columns)."""
    bh = tl.program_id(0)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    h = tl.load(H0 + bh * DK * DV + hv, mask=vm, other=0.0)
    for i in tl.range(0, N, num_stages=2):
        chunk = bh * N + i
        tl.store(HS + (bh * (N + 1) + i) * DK * DV + hv, h, mask=vm)
        m = tl.load(MM + chunk * DK * DK + rk[:, None] * DK + rk[None, :])
        h = tl.dot(m, h, input_precision=DOT) + tl.load(BB + chunk * DK * DV + hv, mask=vm, other=0.0)
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
def output_fwd(Q, K, GC, HS, U, WK, O, scale, T, N, H, DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr,
               BV: tl.constexpr, DOT: tl.constexpr):
    n, bh, b, h, chunk = _program(N, H)
    q = _chunk_rows(Q, n, T, H, h, b, DK, BK) * scale
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    G = tl.load(GC + chunk * 64 + tl.arange(0, 64))
    state = _state_tile(HS, bh, n, N, DK, DV, BK, BV)
    w = _chunk_tile(U, chunk, DV, BV) - tl.dot(_chunk_tile(WK, chunk, DK, BK), state, input_precision=DOT)
    p = tl.dot(q, tl.trans(k), input_precision=DOT) * _decay(G)
    o = tl.dot(q * tl.exp(G)[:, None], state, input_precision=DOT) + tl.dot(p, w, input_precision=DOT)
    _store_rows(O, o, n, T, H, h, b, DV, BV)


@triton.jit
def output_bwd(Q, K, GC, HS, U, WK, DO, DQ, DKO, DGO, DW, DHS, scale, T, N, H, DK: tl.constexpr, DV: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    """Gradients through o = (q⊙γ)h + (qkᵀ⊙D)W, W = U − Wk h: dq (final), the output's parts of dk and
    dG, dW, and the gradient into h, (q⊙γ)ᵀdo − Wkᵀ dW."""
    n, bh, b, h, chunk = _program(N, H)
    q = _chunk_rows(Q, n, T, H, h, b, DK, BK) * scale
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    do = _chunk_rows(DO, n, T, H, h, b, DV, BV)
    G = tl.load(GC + chunk * 64 + tl.arange(0, 64))
    gamma = tl.exp(G)
    state = _state_tile(HS, bh, n, N, DK, DV, BK, BV)
    wk = _chunk_tile(WK, chunk, DK, BK)
    w = _chunk_tile(U, chunk, DV, BV) - tl.dot(wk, state, input_precision=DOT)
    decay = _decay(G)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT)
    p = qk * decay
    qg = q * gamma[:, None]
    rk = tl.arange(0, BK)
    rv = tl.arange(0, BV)
    dw = tl.dot(tl.trans(p), do, input_precision=DOT)
    dh = tl.dot(tl.trans(qg), do, input_precision=DOT) - tl.dot(tl.trans(wk), dw, input_precision=DOT)
    tl.store(DHS + (bh * (N + 1) + n) * DK * DV + rk[:, None] * DV + rv[None, :], dh,
             mask=(rk[:, None] < DK) & (rv[None, :] < DV))
    r = tl.arange(0, 64)
    tl.store(DW + chunk * 64 * DV + r[:, None] * DV + rv[None, :], dw, mask=rv[None, :] < DV)
    s = tl.dot(do, tl.trans(w), input_precision=DOT) * decay
    doh = tl.dot(do, tl.trans(state), input_precision=DOT)
    dq = tl.dot(s, k, input_precision=DOT) + gamma[:, None] * doh
    _store_rows(DQ, dq * scale, n, T, H, h, b, DK, BK)
    dk = tl.dot(tl.trans(s), q, input_precision=DOT)
    tl.store(DKO + chunk * 64 * DK + r[:, None] * DK + rk[None, :], dk, mask=rk[None, :] < DK)
    x = s * qk
    tl.store(DGO + chunk * 64 + r, tl.sum(x, 1) - tl.sum(x, 0) + tl.sum(qg * doh, 1))


@triton.jit
def state_bwd(MT, DHS, N, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, DOT: tl.constexpr):
    """Reverse walk g_i = dh_i^ext + M_iᵀ g_{i+1}, in place: DHS holds the outputs' gradients into each
    state (and dh_T at N) and leaves with the total gradient g_i into each state (g_0 = dh0)."""
    bh = tl.program_id(0)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    g = tl.load(DHS + (bh * (N + 1) + N) * DK * DV + hv, mask=vm, other=0.0)
    for j in tl.range(0, N, num_stages=2):
        i = N - 1 - j
        mt = tl.load(MT + (bh * N + i) * DK * DK + rk[:, None] * DK + rk[None, :])
        g = tl.load(DHS + (bh * (N + 1) + i) * DK * DV + hv, mask=vm, other=0.0) + tl.dot(mt, g, input_precision=DOT)
        tl.store(DHS + (bh * (N + 1) + i) * DK * DV + hv, g, mask=vm)


@triton.jit
def prep_bwd(K, V, BETA, GC, TT, HS, DHS, DW, DKO, DGO, DK_OUT, DV_OUT, DG_OUT, DB_OUT, T, N, H,
             DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    """dM = g'hᵀ and dB = g' (g' the gradient into the next state), then through M, B, W, T, U, Wk,
    K̃ and γ_C back to k, v, β and g (reverse cumsum of dG)."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    t = n * 64 + r
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    v = _chunk_rows(V, n, T, H, h, b, DV, BV)
    beta = tl.load(BETA + (b * T + t) * H + h, mask=t < T, other=0.0).to(tl.float32)
    G = tl.load(GC + chunk * 64 + r)
    Gtot = tl.sum(tl.where(r == 63, G, 0.0), 0)
    gamma = tl.exp(G)
    # T is block lower-triangular; prep_fwd writes only those blocks
    tt = tl.load(TT + chunk * 64 * 64 + r[:, None] * 64 + r[None, :], mask=r[:, None] // 16 >= r[None, :] // 16,
                 other=0.0)
    vb = beta[:, None] * v
    kb = (beta * gamma)[:, None] * k
    u = tl.dot(tt, vb, input_precision=DOT)
    wk = tl.dot(tt, kb, input_precision=DOT)
    ktail = tl.exp(Gtot - G)[:, None] * k
    state = _state_tile(HS, bh, n, N, DK, DV, BK, BV)
    g_next = _state_tile(DHS, bh, n + 1, N, DK, DV, BK, BV)  # dB
    dm = tl.dot(g_next, tl.trans(state), input_precision=DOT)
    dw = _chunk_tile(DW, chunk, DV, BV)
    du = dw + tl.dot(ktail, g_next, input_precision=DOT)
    dwk = -tl.dot(dw, tl.trans(state), input_precision=DOT) - tl.dot(ktail, dm, input_precision=DOT)
    dkt = tl.dot(u, tl.trans(g_next), input_precision=DOT) - tl.dot(wk, tl.trans(dm), input_precision=DOT)
    dd = tl.sum(tl.sum(g_next * state, 1), 0)  # trace of dM
    dvb = tl.dot(tl.trans(tt), du, input_precision=DOT)
    dkb = tl.dot(tl.trans(tt), dwk, input_precision=DOT)
    strict = r[:, None] > r[None, :]
    da = -(tl.dot(dvb, tl.trans(u), input_precision=DOT) + tl.dot(dkb, tl.trans(wk), input_precision=DOT))
    m = tl.where(strict, da * tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.0)), 0.0)
    kk = tl.dot(k, tl.trans(k), input_precision=DOT)
    y = m * kk * beta[:, None]  # dA ⊙ A
    mb = beta[:, None] * m
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
