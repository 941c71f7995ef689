"""The backward's chunk-parallel Triton kernels of the chunked gated delta rule (notation, layouts and
the Dk/Dv blocking of triton_kernels.py): `output_bwd` → (state walk) → `prep_bwd_state` → `prep_bwd_wy`.

Blocks of Dk (KB wide, NK of them) and Dv (VB wide, NV of them) are looped over inside a program, so
every tile is at most [64, 64]. Where a block's result needs every block of the other dimension, the
blocks go through fp32 scratch rows of the program's own chunk (written, a barrier, read back).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_kernels import (
    _block,
    _decay,
    _gate_rows,
    _mm,
    _program,
    _rows,
    _store_block,
    _store_gate_rows,
    _store_rows,
)


@triton.jit
def _slot_n(DST, DHT, bh, last, r0, c0, SLOT_N: tl.constexpr, R: tl.constexpr, C: tl.constexpr, BR: tl.constexpr,
            BC: tl.constexpr):
    """Block (r0, c0) of the final state's gradient into DST (a row-major [R, C] slot) when `last`:
    the block of DHT's row bh (SLOT_N "given") or zeros."""
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    m = (r[:, None] < R) & (c[None, :] < C) & last
    if SLOT_N == "given":
        x = tl.load(DHT + bh * R * C + r[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    else:
        x = tl.zeros((BR, BC), dtype=tl.float32)
    tl.store(DST + r[:, None] * C + c[None, :], x, mask=m)


@triton.jit
def output_bwd(Q, K, GC, HS, U, WK, DO, DQ, DKO, DGO, DW, WS, DHS, scale, T, N, H, DK: tl.constexpr,
               DV: tl.constexpr, KB: tl.constexpr, VB: tl.constexpr, NK: tl.constexpr, NV: tl.constexpr,
               DOT: tl.constexpr, DHT=None, SLOT_N: tl.constexpr = "none", STORE_W: tl.constexpr = True):
    """Gradients through o = (q⊙γ)h + (qkᵀ⊙D)W, W = U − Wk h: dq (final), the output's parts of dk and
    dG, dW, the gradient into h, (q⊙γ)ᵀdo − Wkᵀ dW; W itself into WS (STORE_W; prep_bwd_state reads
    it, the fused `prep_bwd` recomputes it). SLOT_N "zero" / "given": the last chunk's program also
    fills DHS's slot N (the final state's gradient) with zeros / DHT [B·H, DK, DV]; "none": left."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    G = tl.load(GC + chunk * 64 + r)
    gamma = tl.exp(G)
    decay = _decay(G)
    state = HS + (bh * (N + 1) + n) * DK * DV
    qk = tl.zeros((64, 64), dtype=tl.float32)
    for i in tl.static_range(NK):
        qk += _mm(_rows(Q, n, T, H, h, b, i * KB, DK, KB), tl.trans(_rows(K, n, T, H, h, b, i * KB, DK, KB)), DOT)
    qk = qk * scale
    s = tl.zeros((64, 64), dtype=tl.float32)
    for j in tl.static_range(NV):
        do = _rows(DO, n, T, H, h, b, j * VB, DV, VB)
        dw = _mm(tl.trans(qk * decay), do, DOT)
        _store_block(DW + chunk * 64 * DV, dw, 0, j * VB, 64, DV, 64, VB)
        wh = tl.zeros((64, VB), dtype=tl.float32)
        for i in tl.static_range(NK):
            wk = _block(WK + chunk * 64 * DK, 0, i * KB, 64, DK, 64, KB)
            qg = _rows(Q, n, T, H, h, b, i * KB, DK, KB) * (scale * gamma)[:, None]
            dh = _mm(tl.trans(qg), do, DOT) - _mm(tl.trans(wk), dw, DOT)
            _store_block(DHS + (bh * (N + 1) + n) * DK * DV, dh, i * KB, j * VB, DK, DV, KB, VB)
            if SLOT_N != "none":
                _slot_n(DHS + (bh * (N + 1) + N) * DK * DV, DHT, bh, n == N - 1, i * KB, j * VB,
                        SLOT_N, DK, DV, KB, VB)
            wh += _mm(wk, _block(state, i * KB, j * VB, DK, DV, KB, VB), DOT)
        w = _block(U + chunk * 64 * DV, 0, j * VB, 64, DV, 64, VB) - wh
        if STORE_W:
            _store_block(WS + chunk * 64 * DV, w, 0, j * VB, 64, DV, 64, VB)
        s += _mm(do, tl.trans(w), DOT)
    s = s * decay
    x = s * qk
    dG = tl.sum(x, 1) - tl.sum(x, 0)
    for i in tl.static_range(NK):
        q = _rows(Q, n, T, H, h, b, i * KB, DK, KB) * scale
        doh = tl.zeros((64, KB), dtype=tl.float32)
        for j in tl.static_range(NV):
            doh += _mm(_rows(DO, n, T, H, h, b, j * VB, DV, VB),
                       tl.trans(_block(state, i * KB, j * VB, DK, DV, KB, VB)), DOT)
        dG += tl.sum(q * doh, 1) * gamma
        dq = (_mm(s, _rows(K, n, T, H, h, b, i * KB, DK, KB), DOT) + gamma[:, None] * doh) * scale
        _store_rows(DQ, dq, n, T, H, h, b, i * KB, DK, KB)
        _store_block(DKO + chunk * 64 * DK, _mm(tl.trans(s), q, DOT), 0, i * KB, 64, DK, 64, KB)
    tl.store(DGO + chunk * 64 + r, dG)


@triton.jit
def prep_bwd_state(K, GC, TT, WS, HS, DHS, DW, DU, DKB, DKO, DGO, N, T, H, DK: tl.constexpr, DV: tl.constexpr,
                   KB: tl.constexpr, VB: tl.constexpr, NK: tl.constexpr, NV: tl.constexpr, DOT: tl.constexpr):
    """The chunk map's side, with g' the gradient into the next state: dU = dW + K̃g', dWk = −dU hᵀ,
    dK̃ = W g'ᵀ (→ dk, dG through K̃ = (γ_C/γ)⊙K), dγ_C = Σ g'⊙h; then through T: d(β⊙V) = Tᵀ dU
    (over DW) and d(β⊙γ⊙K) = Tᵀ dWk (into DKB). dU goes through the scratch DU."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    G = tl.load(GC + chunk * 64 + r)
    gtot = tl.load(GC + chunk * 64 + 63)
    tail = tl.exp(gtot - G)
    state = HS + (bh * (N + 1) + n) * DK * DV
    g_next = DHS + (bh * (N + 1) + n + 1) * DK * DV
    dd = 0.0
    for j in tl.static_range(NV):
        du = _block(DW + chunk * 64 * DV, 0, j * VB, 64, DV, 64, VB)
        for i in tl.static_range(NK):
            gn = _block(g_next, i * KB, j * VB, DK, DV, KB, VB)
            du += _mm(tail[:, None] * _rows(K, n, T, H, h, b, i * KB, DK, KB), gn, DOT)
            dd += tl.sum(tl.sum(gn * _block(state, i * KB, j * VB, DK, DV, KB, VB), 1), 0)
        _store_block(DU + chunk * 64 * DV, du, 0, j * VB, 64, DV, 64, VB)
    tl.debug_barrier()
    tt = _block(TT + chunk * 64 * 64, 0, 0, 64, 64, 64, 64)
    r_tail = tl.zeros((64,), dtype=tl.float32)
    for i in tl.static_range(NK):
        dwk = tl.zeros((64, KB), dtype=tl.float32)
        dkt = tl.zeros((64, KB), dtype=tl.float32)
        for j in tl.static_range(NV):
            dwk -= _mm(_block(DU + chunk * 64 * DV, 0, j * VB, 64, DV, 64, VB),
                       tl.trans(_block(state, i * KB, j * VB, DK, DV, KB, VB)), DOT)
            dkt += _mm(_block(WS + chunk * 64 * DV, 0, j * VB, 64, DV, 64, VB),
                       tl.trans(_block(g_next, i * KB, j * VB, DK, DV, KB, VB)), DOT)
        r_tail += tl.sum(dkt * tail[:, None] * _rows(K, n, T, H, h, b, i * KB, DK, KB), 1)
        dko = _block(DKO + chunk * 64 * DK, 0, i * KB, 64, DK, 64, KB) + tail[:, None] * dkt
        _store_block(DKO + chunk * 64 * DK, dko, 0, i * KB, 64, DK, 64, KB)
        _store_block(DKB + chunk * 64 * DK, _mm(tl.trans(tt), dwk, DOT), 0, i * KB, 64, DK, 64, KB)
    dG = tl.load(DGO + chunk * 64 + r) - r_tail + tl.where(r == 63, tl.sum(r_tail, 0) + dd * tl.exp(gtot), 0.0)
    tl.store(DGO + chunk * 64 + r, dG)
    for j in tl.static_range(NV):
        du = _block(DU + chunk * 64 * DV, 0, j * VB, 64, DV, 64, VB)
        _store_block(DW + chunk * 64 * DV, _mm(tl.trans(tt), du, DOT), 0, j * VB, 64, DV, 64, VB)


@triton.jit
def prep_bwd_wy(K, V, BETA, GC, U, WK, DVB, DKB, DKO, DGO, DK_OUT, DV_OUT, DG_OUT, DB_OUT, T, N, H,
                DK: tl.constexpr, DV: tl.constexpr, KB: tl.constexpr, VB: tl.constexpr, NK: tl.constexpr,
                NV: tl.constexpr, DOT: tl.constexpr):
    """Through U = T(β⊙V), Wk = T(β⊙γ⊙K) and T = (I + A)⁻¹, where dA = −(d(β⊙V) Uᵀ + d(β⊙γ⊙K) Wkᵀ),
    back to k, v, β and g (reverse cumsum of dG)."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    beta = _gate_rows(BETA, n, T, H, h, b)
    G = tl.load(GC + chunk * 64 + r)
    gamma = tl.exp(G)
    da = tl.zeros((64, 64), dtype=tl.float32)
    dbeta = tl.zeros((64,), dtype=tl.float32)
    for j in tl.static_range(NV):
        dvb = _block(DVB + chunk * 64 * DV, 0, j * VB, 64, DV, 64, VB)
        dbeta += tl.sum(dvb * _rows(V, n, T, H, h, b, j * VB, DV, VB), 1)
        _store_rows(DV_OUT, beta[:, None] * dvb, n, T, H, h, b, j * VB, DV, VB)
        da += _mm(dvb, tl.trans(_block(U + chunk * 64 * DV, 0, j * VB, 64, DV, 64, VB)), DOT)
    kk = tl.zeros((64, 64), dtype=tl.float32)
    gk = tl.zeros((64,), dtype=tl.float32)
    for i in tl.static_range(NK):
        dkb = _block(DKB + chunk * 64 * DK, 0, i * KB, 64, DK, 64, KB)
        k = _rows(K, n, T, H, h, b, i * KB, DK, KB)
        da += _mm(dkb, tl.trans(_block(WK + chunk * 64 * DK, 0, i * KB, 64, DK, 64, KB)), DOT)
        gk += tl.sum(dkb * gamma[:, None] * k, 1)
        kk += _mm(k, tl.trans(k), DOT)
    strict = r[:, None] > r[None, :]
    m = tl.where(strict, -da * tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.0)), 0.0)
    dbeta += gk + tl.sum(m * kk, 1)
    y = m * kk * beta[:, None]  # dA ⊙ A
    dG = tl.load(DGO + chunk * 64 + r) + beta * gk + tl.sum(y, 1) - tl.sum(y, 0)
    dg = tl.sum(dG, 0) - tl.cumsum(dG, 0) + dG  # g enters G_s for every s ≥ t
    mb = beta[:, None] * m
    for i in tl.static_range(NK):
        k = _rows(K, n, T, H, h, b, i * KB, DK, KB)
        dk = (_block(DKO + chunk * 64 * DK, 0, i * KB, 64, DK, 64, KB)
              + (beta * gamma)[:, None] * _block(DKB + chunk * 64 * DK, 0, i * KB, 64, DK, 64, KB)
              + _mm(mb, k, DOT) + _mm(tl.trans(mb), k, DOT))
        _store_rows(DK_OUT, dk, n, T, H, h, b, i * KB, DK, KB)
    _store_gate_rows(DB_OUT, dbeta, n, T, H, h, b)
    _store_gate_rows(DG_OUT, dg, n, T, H, h, b)


@triton.jit
def prep_bwd(K, V, BETA, GC, TT, U, WK, HS, DHS, DW, DKO, DGO, DK_OUT, DV_OUT, DG_OUT, DB_OUT, N, T, H,
             DK: tl.constexpr, DV: tl.constexpr, KB: tl.constexpr, VB: tl.constexpr, DOT: tl.constexpr):
    """`prep_bwd_state` and `prep_bwd_wy` in one program per chunk, for one block of each of Dk and Dv
    (Dk, Dv ≤ 64): every intermediate (dU, dWk, d(β⊙V), d(β⊙γ⊙K), the updated dk and dG parts) stays
    in registers instead of going through fp32 scratch and a second launch, and W = U − Wk h is
    recomputed from what the program reads anyway (output_bwd need not store it). Same formulas and
    product precisions as the two kernels."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    G = tl.load(GC + chunk * 64 + r)
    gtot = tl.load(GC + chunk * 64 + 63)
    tail = tl.exp(gtot - G)
    k = _rows(K, n, T, H, h, b, 0, DK, KB)
    state = _block(HS + (bh * (N + 1) + n) * DK * DV, 0, 0, DK, DV, KB, VB)
    g_next = _block(DHS + (bh * (N + 1) + n + 1) * DK * DV, 0, 0, DK, DV, KB, VB)
    # the chunk map's side (prep_bwd_state), in an order that lets each tile die early
    dd = tl.sum(tl.sum(g_next * state, 1), 0)
    du = _block(DW + chunk * 64 * DV, 0, 0, 64, DV, 64, VB) + _mm(tail[:, None] * k, g_next, DOT)
    tt = _block(TT + chunk * 64 * 64, 0, 0, 64, 64, 64, 64)
    dvb = _mm(tl.trans(tt), du, DOT)  # d(β⊙V)
    dkb = _mm(tl.trans(tt), -_mm(du, tl.trans(state), DOT), DOT)  # d(β⊙γ⊙K) = Tᵀ dWk
    u = _block(U + chunk * 64 * DV, 0, 0, 64, DV, 64, VB)
    wk = _block(WK + chunk * 64 * DK, 0, 0, 64, DK, 64, KB)
    dkt = _mm(u - _mm(wk, state, DOT), tl.trans(g_next), DOT)  # W g'ᵀ, W = U − Wk h as output_bwd has it
    r_tail = tl.sum(dkt * tail[:, None] * k, 1)
    dko = _block(DKO + chunk * 64 * DK, 0, 0, 64, DK, 64, KB) + tail[:, None] * dkt
    dG = tl.load(DGO + chunk * 64 + r) - r_tail + tl.where(r == 63, tl.sum(r_tail, 0) + dd * tl.exp(gtot), 0.0)
    # through U, Wk and T (prep_bwd_wy)
    beta = _gate_rows(BETA, n, T, H, h, b)
    gamma = tl.exp(G)
    da = _mm(dvb, tl.trans(u), DOT) + _mm(dkb, tl.trans(wk), DOT)
    dbeta = tl.sum(dvb * _rows(V, n, T, H, h, b, 0, DV, VB), 1)
    _store_rows(DV_OUT, beta[:, None] * dvb, n, T, H, h, b, 0, DV, VB)
    gk = tl.sum(dkb * gamma[:, None] * k, 1)
    kk = _mm(k, tl.trans(k), DOT)
    strict = r[:, None] > r[None, :]
    m = tl.where(strict, -da * tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.0)), 0.0)
    dbeta += gk + tl.sum(m * kk, 1)
    y = m * kk * beta[:, None]  # dA ⊙ A
    dG += beta * gk + tl.sum(y, 1) - tl.sum(y, 0)
    dg = tl.sum(dG, 0) - tl.cumsum(dG, 0) + dG  # g enters G_s for every s ≥ t
    mb = beta[:, None] * m
    dk = dko + (beta * gamma)[:, None] * dkb + _mm(mb, k, DOT) + _mm(tl.trans(mb), k, DOT)
    _store_rows(DK_OUT, dk, n, T, H, h, b, 0, DK, KB)
    _store_gate_rows(DB_OUT, dbeta, n, T, H, h, b)
    _store_gate_rows(DG_OUT, dg, n, T, H, h, b)
