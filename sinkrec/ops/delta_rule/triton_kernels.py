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
`prep_bwd_state` (per chunk: dM = g'hᵀ, dB = g', through M, B and T) → `prep_bwd_wy` (through A).

Inputs use the [B, T, H, D] layout directly (rows past T read as zeros: g = β = 0 writes and decays
nothing); chunk-level tensors are [B·H, N, C, ·] (fp32, or bf16 for Wk and the states where every
consumer rounds them to bf16). T is inverted per 16×16 diagonal block by forward substitution (the
four blocks at once), the rest by a nilpotent series of 64×64 products. Element-wise arithmetic and
accumulation are fp32; `DOT` picks the products: "tf32x3" (fp32-accurate), "tf32" or "bf16".
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mm(a, b, DOT: tl.constexpr):
    """Matrix product with fp32 accumulation; DOT "bf16" rounds both operands to bf16 first."""
    if DOT == "bf16":
        c = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        c = tl.dot(a, b, input_precision=DOT)
    return c


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
def _gate_rows(ptr, n, T, H, h, b):
    """The 64 rows of chunk n of a [B, T, H] gate tensor as fp32 [64] (zeros past T)."""
    t = n * 64 + tl.arange(0, 64)
    return tl.load(ptr + (b * T + t) * H + h, mask=t < T, other=0.0).to(tl.float32)


@triton.jit
def _store_gate_rows(ptr, x, n, T, H, h, b):
    t = n * 64 + tl.arange(0, 64)
    tl.store(ptr + (b * T + t) * H + h, x.to(ptr.dtype.element_ty), mask=t < T)


@triton.jit
def _load_matrix(ptr, R: tl.constexpr, C: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """A row-major [R, C] matrix (a chunk's tile or a state) as fp32 [BR, BC], zero-padded."""
    r = tl.arange(0, BR)
    c = tl.arange(0, BC)
    m = (r[:, None] < R) & (c[None, :] < C)
    return tl.load(ptr + r[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _store_matrix(ptr, x, R: tl.constexpr, C: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """Store the [R, C] part of an [BR, BC] tile row-major, in the pointer's dtype."""
    r = tl.arange(0, BR)
    c = tl.arange(0, BC)
    m = (r[:, None] < R) & (c[None, :] < C)
    tl.store(ptr + r[:, None] * C + c[None, :], x.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _program(N, H):
    """Coordinates of a chunk-parallel program (grid = (N, B·H)): chunk n, b·h, b, h, flat chunk index."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    return n, bh, bh // H, bh % H, bh * N + n


@triton.jit
def _block_diag_inverse(a):
    """(I + a)⁻¹ for a [64, 64] a that is strictly lower-triangular inside its four 16×16 diagonal
    blocks and zero outside them: forward substitution on the four blocks at once ([4, 16, 16])."""
    a3 = tl.sum(tl.reshape(a, (4, 16, 4, 16)), 2)  # block i of the diagonal (the others are zero)
    r = tl.arange(0, 16)
    row = r[None, :, None]
    x = tl.zeros((4, 16, 16), dtype=tl.float32) + tl.where(row == r[None, None, :], 1.0, 0.0)
    for i in tl.static_range(1, 16):
        a_i = tl.sum(tl.where(row == i, a3, 0.0), 1)  # row i of each block, [4, 16]
        x = tl.where(row == i, x - tl.sum(a_i[:, :, None] * x, 1)[:, None, :], x)
    blk = tl.arange(0, 4)
    on_diag = blk[:, None, None, None] == blk[None, None, :, None]
    return tl.reshape(tl.where(on_diag, x[:, :, None, :], 0.0), (64, 64))


@triton.jit
def prep_fwd(K, V, G_IN, BETA, TT, U, WK, MM, BB, GC, T, N, H,
             DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr,
             SAVE_T: tl.constexpr):
    """Per chunk: G, T = (I + A)⁻¹, U, Wk, M and B (T itself only when the backward needs it).

    With A = A_d + L (A_d the 16×16 diagonal blocks, L the rest) and D = (I + A_d)⁻¹, N = D L is
    nilpotent (N⁴ = 0), so T = (I + N)⁻¹ D = (I − N)(I + N²) D: four 64×64 products."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    g = _gate_rows(G_IN, n, T, H, h, b)
    beta = _gate_rows(BETA, n, T, H, h, b)
    G = tl.cumsum(g, 0)
    Gtot = tl.sum(g, 0)
    tl.store(GC + chunk * 64 + r, G)
    strict = r[:, None] > r[None, :]
    a = tl.where(strict, beta[:, None] * _mm(k, tl.trans(k), DOT)
                 * tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.0)), 0.0)
    same_block = r[:, None] // 16 == r[None, :] // 16
    d = _block_diag_inverse(tl.where(same_block, a, 0.0))
    nil = _mm(d, tl.where(same_block, 0.0, a), DOT)
    p = d + _mm(_mm(nil, nil, DOT), d, DOT)
    tt = p - _mm(nil, p, DOT)
    if SAVE_T:
        _store_matrix(TT + chunk * 64 * 64, tt, 64, 64, 64, 64)
    rk = tl.arange(0, BK)
    ktail = tl.trans(tl.exp(Gtot - G)[:, None] * k)
    wk = _mm(tt, (beta * tl.exp(G))[:, None] * k, DOT)
    _store_matrix(WK + chunk * 64 * DK, wk, 64, DK, 64, BK)
    m = tl.where(rk[:, None] == rk[None, :], tl.exp(Gtot), 0.0) - _mm(ktail, wk, DOT)
    _store_matrix(MM + chunk * DK * DK, m, DK, DK, BK, BK)
    u = _mm(tt, beta[:, None] * _chunk_rows(V, n, T, H, h, b, DV, BV), DOT)
    _store_matrix(U + chunk * 64 * DV, u, 64, DV, 64, BV)
    bb = _mm(ktail, u, DOT)
    _store_matrix(BB + chunk * DK * DV, bb, DK, DV, BK, BV)


@triton.jit
def _group(N, G):
    """The chain (b·h) and chunk range [start, start + steps) of this program's row: rows run over
    (b·h, group of G chunks); G = N makes one group per chain."""
    row = tl.program_id(0)
    groups = tl.cdiv(N, G)
    start = (row % groups) * G
    return row, row // groups, start, tl.minimum(G, N - start)


@triton.jit
def _initial(PTR, row, INIT: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr):
    """Block [DK, BS] (columns from program_id(1)) of the walk's start: row `row` of PTR ("given"), zero,
    or the identity (DV = DK: the walk then computes its map)."""
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    if INIT == "given":
        x = tl.load(PTR + row * DK * DV + rk[:, None] * DV + rv[None, :], mask=rv[None, :] < DV, other=0.0)
    elif INIT == "identity":
        x = tl.where(rk[:, None] == rv[None, :], 1.0, 0.0)
    else:
        x = tl.zeros((DK, BS), dtype=tl.float32)
    return x.to(tl.float32)


@triton.jit
def state_fwd(MM, BB, H0, HS, HT, N, G, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, DOT: tl.constexpr,
              INIT: tl.constexpr, ADD_B: tl.constexpr, STORE_STATES: tl.constexpr, STORE_FINAL: tl.constexpr):
    """h_{i+1} = M_i h_i (+ B_i if ADD_B) in fp32 over one group's chunks, from `_initial`; stores each
    h_i in HS's [B·H, N+1] layout (STORE_STATES) and the group's last h at HT's row (STORE_FINAL).
    One program per (row, block of Dv columns)."""
    row, bh, start, steps = _group(N, G)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    h = _initial(H0, row, INIT, DK, DV, BS)
    for i in tl.range(0, steps, num_stages=2):
        chunk = bh * N + start + i
        if STORE_STATES:
            tl.store(HS + (chunk + bh) * DK * DV + hv, h.to(HS.dtype.element_ty), mask=vm)
        h = _mm(tl.load(MM + chunk * DK * DK + rk[:, None] * DK + rk[None, :]), h, DOT)
        if ADD_B:
            h += tl.load(BB + chunk * DK * DV + hv, mask=vm, other=0.0)
    if STORE_FINAL:
        tl.store(HT + row * DK * DV + hv, h, mask=vm)


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
    state = _load_matrix(HS + (bh * (N + 1) + n) * DK * DV, DK, DV, BK, BV)
    wk = _load_matrix(WK + chunk * 64 * DK, 64, DK, 64, BK)
    w = _load_matrix(U + chunk * 64 * DV, 64, DV, 64, BV) - _mm(wk, state, DOT)
    p = _mm(q, tl.trans(k), DOT) * _decay(G)
    o = _mm(q * tl.exp(G)[:, None], state, DOT) + _mm(p, w, DOT)
    _store_rows(O, o, n, T, H, h, b, DV, BV)


@triton.jit
def output_bwd(Q, K, GC, HS, U, WK, DO, DQ, DKO, DGO, DW, DHS, scale, T, N, H, DK: tl.constexpr, DV: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    """Gradients through o = (q⊙γ)h + (qkᵀ⊙D)W, W = U − Wk h: dq (final), the output's parts of dk and
    dG, dW, and the gradient into h, (q⊙γ)ᵀdo − Wkᵀ dW."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    G = tl.load(GC + chunk * 64 + r)
    gamma = tl.exp(G)
    # in an order that lets each tile die early (fewer live registers)
    q = _chunk_rows(Q, n, T, H, h, b, DK, BK) * scale
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    do = _chunk_rows(DO, n, T, H, h, b, DV, BV)
    decay = _decay(G)
    qk = _mm(q, tl.trans(k), DOT)
    dw = _mm(tl.trans(qk * decay), do, DOT)
    _store_matrix(DW + chunk * 64 * DV, dw, 64, DV, 64, BV)
    wk = _load_matrix(WK + chunk * 64 * DK, 64, DK, 64, BK)
    dh = _mm(tl.trans(q * gamma[:, None]), do, DOT) - _mm(tl.trans(wk), dw, DOT)
    _store_matrix(DHS + (bh * (N + 1) + n) * DK * DV, dh, DK, DV, BK, BV)
    state = _load_matrix(HS + (bh * (N + 1) + n) * DK * DV, DK, DV, BK, BV)
    w = _load_matrix(U + chunk * 64 * DV, 64, DV, 64, BV) - _mm(wk, state, DOT)
    s = _mm(do, tl.trans(w), DOT) * decay
    x = s * qk
    doh = _mm(do, tl.trans(state), DOT)
    tl.store(DGO + chunk * 64 + r, tl.sum(x, 1) - tl.sum(x, 0) + tl.sum(q * doh, 1) * gamma)
    _store_rows(DQ, (_mm(s, k, DOT) + gamma[:, None] * doh) * scale, n, T, H, h, b, DK, BK)
    _store_matrix(DKO + chunk * 64 * DK, _mm(tl.trans(s), q, DOT), 64, DK, 64, BK)


@triton.jit
def state_bwd(MM, DHS, G0, GT, N, G, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, DOT: tl.constexpr,
              INIT: tl.constexpr, ADD_E: tl.constexpr, STORE_STATES: tl.constexpr, FINAL: tl.constexpr):
    """Reverse walk g_i = M_iᵀ g_{i+1} (+ e_i if ADD_E) over one group's chunks, in place in DHS's
    [B·H, N+1] layout: DHS holds the outputs' gradients e_i into each state (and dh_T at N) and, with
    STORE_STATES, leaves with the total gradient g_i. INIT "end" starts from DHS's slot N, else as
    `_initial` from G0. FINAL "plain" / "transposed" stores the group's g_start (or its transpose,
    DV = DK) at GT's row; "none" stores nothing."""
    row, bh, start, steps = _group(N, G)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    if INIT == "end":
        g = tl.load(DHS + (bh * (N + 1) + N) * DK * DV + hv, mask=vm, other=0.0)
    else:
        g = _initial(G0, row, INIT, DK, DV, BS)
    for j in tl.range(0, steps, num_stages=2):
        chunk = bh * N + start + steps - 1 - j
        g = _mm(tl.trans(tl.load(MM + chunk * DK * DK + rk[:, None] * DK + rk[None, :])), g, DOT)
        if ADD_E:
            g += tl.load(DHS + (chunk + bh) * DK * DV + hv, mask=vm, other=0.0)
        if STORE_STATES:
            tl.store(DHS + (chunk + bh) * DK * DV + hv, g, mask=vm)
    if FINAL == "plain":
        tl.store(GT + row * DK * DV + hv, g, mask=vm)
    elif FINAL == "transposed":
        tl.store(GT + row * DK * DV + rv[None, :] * DK + rk[:, None], g, mask=vm)


@triton.jit
def prep_bwd_state(K, GC, TT, U, WK, HS, DHS, DW, DKB, DKO, DGO, N, T, H,
                   DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    """The chunk map's side: dM = g'hᵀ and dB = g' (g' the gradient into the next state) give dU, dWk
    and the dk, dG parts through K̃ and γ_C; then through T: d(β⊙V) = Tᵀ dU (written over DW) and
    d(β⊙γ⊙K) = Tᵀ dWk (into DKB)."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    G = tl.load(GC + chunk * 64 + r)
    Gtot = tl.sum(tl.where(r == 63, G, 0.0), 0)
    ktail = tl.exp(Gtot - G)[:, None] * k
    state = _load_matrix(HS + (bh * (N + 1) + n) * DK * DV, DK, DV, BK, BV)
    g_next = _load_matrix(DHS + (bh * (N + 1) + n + 1) * DK * DV, DK, DV, BK, BV)
    dm = _mm(g_next, tl.trans(state), DOT)
    dd = tl.sum(tl.sum(g_next * state, 1), 0)  # trace of dM
    dw = _load_matrix(DW + chunk * 64 * DV, 64, DV, 64, BV)
    du = dw + _mm(ktail, g_next, DOT)
    dwk = -_mm(dw, tl.trans(state), DOT) - _mm(ktail, dm, DOT)
    dkt = (_mm(_load_matrix(U + chunk * 64 * DV, 64, DV, 64, BV), tl.trans(g_next), DOT)
           - _mm(_load_matrix(WK + chunk * 64 * DK, 64, DK, 64, BK), tl.trans(dm), DOT))
    r_tail = tl.sum(dkt * ktail, 1)
    dko = DKO + chunk * 64 * DK
    _store_matrix(dko, _load_matrix(dko, 64, DK, 64, BK) + tl.exp(Gtot - G)[:, None] * dkt, 64, DK, 64, BK)
    dG = tl.load(DGO + chunk * 64 + r) - r_tail + tl.where(r == 63, tl.sum(r_tail, 0) + dd * tl.exp(Gtot), 0.0)
    tl.store(DGO + chunk * 64 + r, dG)
    tt = _load_matrix(TT + chunk * 64 * 64, 64, 64, 64, 64)
    _store_matrix(DW + chunk * 64 * DV, _mm(tl.trans(tt), du, DOT), 64, DV, 64, BV)
    _store_matrix(DKB + chunk * 64 * DK, _mm(tl.trans(tt), dwk, DOT), 64, DK, 64, BK)


@triton.jit
def prep_bwd_wy(K, V, BETA, GC, U, WK, DVB, DKB, DKO, DGO, DK_OUT, DV_OUT, DG_OUT, DB_OUT, T, N, H,
                DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
    """Through U = T(β⊙V), Wk = T(β⊙γ⊙K) and T = (I + A)⁻¹, where dA = −(d(β⊙V) Uᵀ + d(β⊙γ⊙K) Wkᵀ),
    back to k, v, β and g (reverse cumsum of dG)."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    beta = _gate_rows(BETA, n, T, H, h, b)
    G = tl.load(GC + chunk * 64 + r)
    gamma = tl.exp(G)
    # in an order that lets each tile die early (fewer live registers)
    dvb = _load_matrix(DVB + chunk * 64 * DV, 64, DV, 64, BV)
    dbeta = tl.sum(dvb * _chunk_rows(V, n, T, H, h, b, DV, BV), 1)
    _store_rows(DV_OUT, beta[:, None] * dvb, n, T, H, h, b, DV, BV)
    da = _mm(dvb, tl.trans(_load_matrix(U + chunk * 64 * DV, 64, DV, 64, BV)), DOT)
    dkb = _load_matrix(DKB + chunk * 64 * DK, 64, DK, 64, BK)
    da = -(da + _mm(dkb, tl.trans(_load_matrix(WK + chunk * 64 * DK, 64, DK, 64, BK)), DOT))
    k = _chunk_rows(K, n, T, H, h, b, DK, BK)
    gk = tl.sum(dkb * gamma[:, None] * k, 1)
    dk = _load_matrix(DKO + chunk * 64 * DK, 64, DK, 64, BK) + (beta * gamma)[:, None] * dkb
    strict = r[:, None] > r[None, :]
    m = tl.where(strict, da * tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.0)), 0.0)
    kk = _mm(k, tl.trans(k), DOT)
    dbeta += gk + tl.sum(m * kk, 1)
    y = m * kk * beta[:, None]  # dA ⊙ A
    dG = tl.load(DGO + chunk * 64 + r) + beta * gk + tl.sum(y, 1) - tl.sum(y, 0)
    dg = tl.sum(dG, 0) - tl.cumsum(dG, 0) + dG  # g enters G_s for every s ≥ t
    mb = beta[:, None] * m
    dk += _mm(mb, k, DOT) + _mm(tl.trans(mb), k, DOT)
    _store_rows(DK_OUT, dk, n, T, H, h, b, DK, BK)
    _store_gate_rows(DB_OUT, dbeta, n, T, H, h, b)
    _store_gate_rows(DG_OUT, dg, n, T, H, h, b)
