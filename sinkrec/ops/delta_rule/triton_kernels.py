"""Triton kernels of the chunked gated delta rule (chunk C = 64): shared helpers, the forward and the
state walks (the backward's chunk-parallel kernels are in triton_kernels_bwd.py).

Notation of chunked.py, per chunk: G = cumsum(g), γ = exp(G), D[t, i] = γ_t/γ_i (i ≤ t),
A = strict(β_t k_tᵀk_i D[t, i]), T = (I + A)⁻¹, U = T(β⊙V), Wk = T(β⊙γ⊙K), K̃ = (γ_C/γ)⊙K,
W = U − Wk h, o = (q⊙γ)h + (qkᵀ⊙D)W   (q already scaled),
h' = γ_C h + K̃ᵀW = M h + B  with  M = γ_C I − K̃ᵀWk,  B = K̃ᵀU.
The sequential part is one step per chunk, h' = γ_C h + K̃ᵀ(U − Wk h) (backward: g = e + γ_C g' −
Wkᵀ(K̃ g')); M is never formed, except as a group's map in the two-level walks (`state_*_maps`).

Forward:  `prep_fwd` (per chunk: G, T, U, Wk) → `state_fwd` (sequential over chunks, h in registers)
→ `output_fwd` (per chunk and block of Dv columns).
Backward: `output_bwd` → `state_bwd` → `prep_bwd` (Dk = 64, 32 < Dv ≤ 64; otherwise, or with FUSED_BWD
off, `prep_bwd_state` → `prep_bwd_wy`) (triton_kernels_bwd.py).

Every head size: the chunk-parallel kernels work on blocks of at most 64 columns of Dk (KB wide, NK
of them) and of Dv (VB wide, NV of them), looping over the blocks inside a program, so no tile is
larger than [64, 64] whatever the head size (shared memory and registers stay those of D = 64). The
state walks hold h as [Dk, BS] (BS columns of Dv per program) and read Wk and K̃ as [64, Dk] tiles.

Inputs use the [B, T, H, D] layout directly (rows past T read as zeros: g = β = 0 writes and decays
nothing); chunk-level tensors are [B·H, N, C, ·] (fp32, or bf16 for Wk and the states where every
consumer rounds them to bf16). T's 16×16 diagonal blocks come from exact 4×4 inverses merged by
64×64 products (or by forward substitution, the four blocks at once), the rest by a nilpotent series
of 64×64 products (`_unit_lower_inverse`). Element-wise arithmetic and
accumulation are fp32; `DOT` picks the products: "tf32x3" (fp32-accurate), "tf32" or "bf16".
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mm(a, b, DOT: tl.constexpr):
    """a @ b with fp32 accumulation; DOT "bf16" rounds the operands to bf16 first (full-rate tensor cores)."""
    if DOT == "bf16":
        c = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=DOT)
    return c


@triton.jit
def _rows(ptr, n, T, H, h, b, c0, D: tl.constexpr, BD: tl.constexpr):
    """Columns [c0, c0 + BD) of the 64 rows of chunk n of a [B, T, H, D] tensor as fp32 [64, BD]."""
    t = n * 64 + tl.arange(0, 64)
    c = c0 + tl.arange(0, BD)
    m = (t[:, None] < T) & (c[None, :] < D)
    return tl.load(ptr + ((b * T + t[:, None]) * H + h) * D + c[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, n, T, H, h, b, c0, D: tl.constexpr, BD: tl.constexpr):
    t = n * 64 + tl.arange(0, 64)
    c = c0 + tl.arange(0, BD)
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
def _block(ptr, r0, c0, R: tl.constexpr, C: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """Rows [r0, r0 + BR) × columns [c0, c0 + BC) of a row-major [R, C] matrix as fp32, zero-padded."""
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    m = (r[:, None] < R) & (c[None, :] < C)
    return tl.load(ptr + r[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _store_block(ptr, x, r0, c0, R: tl.constexpr, C: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """Store x as rows [r0, r0 + BR) × columns [c0, c0 + BC) of a row-major [R, C] matrix, in ptr's dtype."""
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    m = (r[:, None] < R) & (c[None, :] < C)
    tl.store(ptr + r[:, None] * C + c[None, :], x.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _program(N, H):
    """Coordinates of a chunk-parallel program (grid = (N, B·H, ·)): chunk n, b·h, b, h, flat chunk index."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    return n, bh, bh // H, bh % H, bh * N + n


@triton.jit
def _decay(G):
    """D[t, i] = exp(G_t − G_i) for i ≤ t, else 0."""
    r = tl.arange(0, 64)
    causal = r[:, None] >= r[None, :]
    return tl.where(causal, tl.exp(tl.where(causal, G[:, None] - G[None, :], 0.0)), 0.0)


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
def _merge_blocks(d, a, same, DOT: tl.constexpr):
    """(I + a)⁻¹ from d = the inverse of I + (a's diagonal blocks, `same`), when the blocks below the
    diagonal form at most four block rows: with L = a off the blocks, N = d L is nilpotent (N⁴ = 0),
    so (I + a)⁻¹ = (I + N)⁻¹ d = (I − N)(I + N²) d. Four 64×64 products, exact in exact arithmetic."""
    nil = _mm(d, tl.where(same, 0.0, a), DOT)
    p = d + _mm(_mm(nil, nil, DOT), d, DOT)
    return p - _mm(nil, p, DOT)


@triton.jit
def _unit_lower_inverse(a, INV: tl.constexpr, INV_DOT: tl.constexpr, DOT: tl.constexpr):
    """T = (I + a)⁻¹ for a strictly lower-triangular [64, 64] a. The 16×16 diagonal blocks: by forward
    substitution (INV "substitution": 15 dependent steps on [4, 16, 16]) or (INV "nilpotent") by the
    same block formula one level down: 4×4 blocks as (I − a₄)(I + a₄²) (a₄⁴ = 0), merged into 16×16
    blocks by `_merge_blocks` (products in INV_DOT); then the 16×16 blocks into T (products in DOT)."""
    r = tl.arange(0, 64)
    same16 = r[:, None] // 16 == r[None, :] // 16
    if INV == "substitution":
        d = _block_diag_inverse(tl.where(same16, a, 0.0))
    else:
        same4 = r[:, None] // 4 == r[None, :] // 4
        a4 = tl.where(same4, a, 0.0)
        eye = tl.where(r[:, None] == r[None, :], 1.0, 0.0)
        d4 = eye - a4 + _mm(eye - a4, _mm(a4, a4, INV_DOT), INV_DOT)
        d = _merge_blocks(d4, tl.where(same16, a, 0.0), same4, INV_DOT)
    return _merge_blocks(d, a, same16, DOT)


@triton.jit
def prep_fwd(K, V, G_IN, BETA, TT, U, WK, GC, T, N, H, DK: tl.constexpr, DV: tl.constexpr, KB: tl.constexpr,
             VB: tl.constexpr, NK: tl.constexpr, NV: tl.constexpr, DOT: tl.constexpr, SAVE_T: tl.constexpr,
             INV: tl.constexpr, INV_DOT: tl.constexpr):
    """Per chunk: G, T = (I + A)⁻¹ (`_unit_lower_inverse`), U and Wk (T itself only when the backward
    needs it, in TT's dtype: bf16 where every consumer rounds it to bf16 anyway)."""
    n, bh, b, h, chunk = _program(N, H)
    r = tl.arange(0, 64)
    g = _gate_rows(G_IN, n, T, H, h, b)
    beta = _gate_rows(BETA, n, T, H, h, b)
    G = tl.cumsum(g, 0)
    tl.store(GC + chunk * 64 + r, G)
    kk = tl.zeros((64, 64), dtype=tl.float32)
    for i in tl.static_range(NK):
        k = _rows(K, n, T, H, h, b, i * KB, DK, KB)
        kk += _mm(k, tl.trans(k), DOT)
    strict = r[:, None] > r[None, :]
    a = tl.where(strict, beta[:, None] * kk * tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.0)), 0.0)
    tt = _unit_lower_inverse(a, INV, INV_DOT, DOT)
    if SAVE_T:
        _store_block(TT + chunk * 64 * 64, tt, 0, 0, 64, 64, 64, 64)
    for i in tl.static_range(NK):
        k = _rows(K, n, T, H, h, b, i * KB, DK, KB)
        _store_block(WK + chunk * 64 * DK, _mm(tt, (beta * tl.exp(G))[:, None] * k, DOT), 0, i * KB, 64, DK, 64, KB)
    for j in tl.static_range(NV):
        v = _rows(V, n, T, H, h, b, j * VB, DV, VB)
        _store_block(U + chunk * 64 * DV, _mm(tt, beta[:, None] * v, DOT), 0, j * VB, 64, DV, 64, VB)


@triton.jit
def output_fwd(Q, K, GC, HS, U, WK, O, scale, T, N, H, DK: tl.constexpr, DV: tl.constexpr, KB: tl.constexpr,
               VB: tl.constexpr, NK: tl.constexpr, DOT: tl.constexpr):
    """o = (q⊙γ)h + (qkᵀ⊙D)(U − Wk h) for one chunk and one block of VB columns (program_id(2))."""
    n, bh, b, h, chunk = _program(N, H)
    c0 = tl.program_id(2) * VB
    G = tl.load(GC + chunk * 64 + tl.arange(0, 64))
    state = HS + (bh * (N + 1) + n) * DK * DV
    qk = tl.zeros((64, 64), dtype=tl.float32)
    qh = tl.zeros((64, VB), dtype=tl.float32)
    wh = tl.zeros((64, VB), dtype=tl.float32)
    for i in tl.static_range(NK):
        q = _rows(Q, n, T, H, h, b, i * KB, DK, KB) * scale
        s = _block(state, i * KB, c0, DK, DV, KB, VB)
        qk += _mm(q, tl.trans(_rows(K, n, T, H, h, b, i * KB, DK, KB)), DOT)
        qh += _mm(q, s, DOT)
        wh += _mm(_block(WK + chunk * 64 * DK, 0, i * KB, 64, DK, 64, KB), s, DOT)
    w = _block(U + chunk * 64 * DV, 0, c0, 64, DV, 64, VB) - wh
    o = tl.exp(G)[:, None] * qh + _mm(qk * _decay(G), w, DOT)
    _store_rows(O, o, n, T, H, h, b, c0, DV, VB)


# ---- the state walks: one program per (chain or group of chunks, block of BS state columns) ----

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
def _chunk_map(K, WK, GC, bh, n, N, T, H, DK: tl.constexpr):
    """Chunk n's map pieces for the walks: γ_C, K̃ [64, DK] and Wk [64, DK] (fp32)."""
    chunk = bh * N + n
    r = tl.arange(0, 64)
    G = tl.load(GC + chunk * 64 + r)
    gtot = tl.load(GC + chunk * 64 + 63)
    ktail = tl.exp(gtot - G)[:, None] * _rows(K, n, T, H, bh % H, bh // H, 0, DK, DK)
    wk = tl.load(WK + chunk * 64 * DK + r[:, None] * DK + tl.arange(0, DK)[None, :]).to(tl.float32)
    return tl.exp(gtot), ktail, wk


@triton.jit
def state_fwd(K, WK, U, GC, H0, HS, HT, N, G, T, H, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr,
              DOT: tl.constexpr, STAGES: tl.constexpr, INIT: tl.constexpr, ADD_U: tl.constexpr,
              STORE_STATES: tl.constexpr, STORE_FINAL: tl.constexpr, STORE_LAST: tl.constexpr = False):
    """h_{i+1} = γ_C h_i + K̃ᵀ((U_i if ADD_U) − Wk h_i) in fp32 over one group's chunks, from `_initial`;
    stores each h_i in HS's [B·H, N+1] layout (STORE_STATES; with STORE_LAST also h_N into slot N, by
    the group that ends the chain) and the group's last h at HT's row (STORE_FINAL). ADD_U off and
    INIT "identity" give the group's map M_last ⋯ M_first; INIT "starts" reads the group's start from
    H0 laid out [B·H, groups + 1] (`state_fwd_maps`' output, read in place)."""
    row, bh, start, steps = _group(N, G)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    r = tl.arange(0, 64)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    if INIT == "starts":  # H0 in the [B·H, groups + 1] layout of `state_fwd_maps`' HS
        h = _initial(H0, row + bh, "given", DK, DV, BS)
    else:
        h = _initial(H0, row, INIT, DK, DV, BS)
    for i in tl.range(0, steps, num_stages=STAGES):
        chunk = bh * N + start + i
        if STORE_STATES:
            tl.store(HS + (chunk + bh) * DK * DV + hv, h.to(HS.dtype.element_ty), mask=vm)
        decay, ktail, wk = _chunk_map(K, WK, GC, bh, start + i, N, T, H, DK)
        w = -_mm(wk, h, DOT)
        if ADD_U:
            w += tl.load(U + chunk * 64 * DV + r[:, None] * DV + rv[None, :], mask=vm, other=0.0)
        h = decay * h + _mm(tl.trans(ktail), w, DOT)
    if STORE_LAST:
        tl.store(HS + (bh * (N + 1) + N) * DK * DV + hv, h.to(HS.dtype.element_ty), mask=vm & (start + steps == N))
    if STORE_FINAL:
        tl.store(HT + row * DK * DV + hv, h, mask=vm)


@triton.jit
def state_bwd(K, WK, GC, DHS, G0, GT, N, G, T, H, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr,
              DOT: tl.constexpr, STAGES: tl.constexpr, INIT: tl.constexpr, ADD_E: tl.constexpr,
              STORE_STATES: tl.constexpr, FINAL: tl.constexpr, DH0=None, STORE_FIRST: tl.constexpr = False):
    """Reverse walk g_i = M_iᵀ g_{i+1} (+ e_i if ADD_E), M_iᵀ g = γ_C g − Wkᵀ(K̃ g), over one group's
    chunks, in place in DHS's [B·H, N+1] layout: DHS holds the outputs' gradients e_i into each state
    (and dh_T at N) and, with STORE_STATES, leaves with the total gradient g_i. INIT "end" starts from
    DHS's slot N, "ends" from G0's row + b·h + 1 ([B·H, groups + 1] layout), else as `_initial` from
    G0. FINAL "plain" / "transposed" stores the group's g_start (or its transpose, DV = DK) at GT's
    row; "none" stores nothing. STORE_FIRST: the group that starts
    the chain also stores g_0 (the initial state's gradient) at DH0's row b·h."""
    row, bh, start, steps = _group(N, G)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    if INIT == "end":
        g = tl.load(DHS + (bh * (N + 1) + N) * DK * DV + hv, mask=vm, other=0.0)
    elif INIT == "ends":  # G0 in the [B·H, groups + 1] layout of `state_bwd_maps`: the group's end is slot + 1
        g = _initial(G0, row + bh + 1, "given", DK, DV, BS)
    else:
        g = _initial(G0, row, INIT, DK, DV, BS)
    for j in tl.range(0, steps, num_stages=STAGES):
        chunk = bh * N + start + steps - 1 - j
        decay, ktail, wk = _chunk_map(K, WK, GC, bh, start + steps - 1 - j, N, T, H, DK)
        g = decay * g - _mm(tl.trans(wk), _mm(ktail, g, DOT), DOT)
        if ADD_E:
            g += tl.load(DHS + (chunk + bh) * DK * DV + hv, mask=vm, other=0.0)
        if STORE_STATES:
            tl.store(DHS + (chunk + bh) * DK * DV + hv, g, mask=vm)
    if STORE_FIRST:
        tl.store(DH0 + bh * DK * DV + hv, g, mask=vm & (start == 0))
    if FINAL == "plain":
        tl.store(GT + row * DK * DV + hv, g, mask=vm)
    elif FINAL == "transposed":
        tl.store(GT + row * DK * DV + rv[None, :] * DK + rk[:, None], g, mask=vm)


@triton.jit
def state_fwd_maps(MM, BB, H0, HS, HT, N, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, DOT: tl.constexpr,
                   H0_INIT: tl.constexpr = "given"):
    """The walk over the groups of a two-level walk: h_{i+1} = M_i h_i + B_i with the groups' maps M
    [DK, DK] and contributions B given (one chain per b·h, from H0, or zero: H0_INIT "zero"), each h_i
    into HS, the last into HT."""
    bh = tl.program_id(0)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    h = _initial(H0, bh, H0_INIT, DK, DV, BS)
    for i in tl.range(0, N, num_stages=2):
        chunk = bh * N + i
        tl.store(HS + (chunk + bh) * DK * DV + hv, h.to(HS.dtype.element_ty), mask=vm)
        h = _mm(tl.load(MM + chunk * DK * DK + rk[:, None] * DK + rk[None, :]), h, DOT)
        h += tl.load(BB + chunk * DK * DV + hv, mask=vm, other=0.0)
    tl.store(HT + bh * DK * DV + hv, h, mask=vm)


@triton.jit
def state_bwd_maps(MT, DHS, N, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, DOT: tl.constexpr, END=None,
                   END_N=0, FROM_END: tl.constexpr = False):
    """The reverse walk over the groups: g_i = e_i + P_i g_{i+1} from g_N = DHS's slot N, with the
    groups' maps stored transposed (MT holds P_iᵀ), in place in DHS's [B·H, N+1] layout. FROM_END:
    g_N is read from slot END_N of END's [B·H, END_N + 1] layout instead, and stored into slot N."""
    bh = tl.program_id(0)
    rv = tl.program_id(1) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    vm = rv[None, :] < DV
    hv = rk[:, None] * DV + rv[None, :]
    if FROM_END:
        g = tl.load(END + (bh * (END_N + 1) + END_N) * DK * DV + hv, mask=vm, other=0.0)
        tl.store(DHS + (bh * (N + 1) + N) * DK * DV + hv, g, mask=vm)
    else:
        g = tl.load(DHS + (bh * (N + 1) + N) * DK * DV + hv, mask=vm, other=0.0)
    for j in tl.range(0, N, num_stages=2):
        chunk = bh * N + N - 1 - j
        g = _mm(tl.trans(tl.load(MT + chunk * DK * DK + rk[:, None] * DK + rk[None, :])), g, DOT)
        g += tl.load(DHS + (chunk + bh) * DK * DV + hv, mask=vm, other=0.0)
        tl.store(DHS + (chunk + bh) * DK * DV + hv, g, mask=vm)


@triton.jit
def _map_or_contribution(NMAP: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr):
    """The column block of a merged group walk (`state_*_groups`): blocks [0, NMAP) of program_id(1)
    walk the group's map (DK columns, from the identity), the others its contribution (DV columns,
    from zero). Returns (is_map, is_contribution, columns, column mask, start value [DK, BS])."""
    p = tl.program_id(1)
    is_map = p < NMAP
    col = tl.where(is_map, p, p - NMAP) * BS + tl.arange(0, BS)
    rk = tl.arange(0, DK)
    start = tl.where((rk[:, None] == col[None, :]) & is_map, 1.0, 0.0)
    return is_map, p >= NMAP, col, col[None, :] < tl.where(is_map, DK, DV), start


@triton.jit
def state_fwd_groups(K, WK, U, GC, MAPS, CONTRIB, N, G, T, H, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr,
                     NMAP: tl.constexpr, DOT: tl.constexpr, STAGES: tl.constexpr):
    """Both first walks of a two-level forward walk in one launch (they are independent): column blocks
    [0, NMAP) of program_id(1) walk each group's map (from the identity, without U; DK columns into
    MAPS' row), the others its contribution (from zero, with U; DV columns into CONTRIB's row). Same
    steps as `state_fwd` with INIT "identity" / "zero"."""
    row, bh, start, steps = _group(N, G)
    is_map, is_contribution, col, vm, h = _map_or_contribution(NMAP, DK, DV, BS)
    rk = tl.arange(0, DK)
    r = tl.arange(0, 64)
    for i in tl.range(0, steps, num_stages=STAGES):
        chunk = bh * N + start + i
        decay, ktail, wk = _chunk_map(K, WK, GC, bh, start + i, N, T, H, DK)
        u = tl.load(U + chunk * 64 * DV + r[:, None] * DV + col[None, :], mask=vm & is_contribution, other=0.0)
        h = decay * h + _mm(tl.trans(ktail), u - _mm(wk, h, DOT), DOT)
    tl.store(MAPS + row * DK * DK + rk[:, None] * DK + col[None, :], h, mask=vm & is_map)
    tl.store(CONTRIB + row * DK * DV + rk[:, None] * DV + col[None, :], h, mask=vm & is_contribution)


@triton.jit
def state_bwd_groups(K, WK, GC, DHS, MT, CONTRIB, N, G, T, H, DK: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr,
                     NMAP: tl.constexpr, DOT: tl.constexpr, STAGES: tl.constexpr, CONTRIB_SKIP: tl.constexpr = False):
    """Both first walks of a two-level backward walk in one launch: column blocks [0, NMAP) walk each
    group's map from the identity without the outputs' gradients and store it transposed into MT's
    row, the others the group's contribution (from zero, adding DHS's e_i) into CONTRIB's row. Same
    steps as `state_bwd` with INIT "identity", FINAL "transposed" / INIT "zero", FINAL "plain".
    CONTRIB_SKIP: CONTRIB is laid out [B·H, groups + 1] (row + b·h), for `state_bwd_maps` in place."""
    row, bh, start, steps = _group(N, G)
    is_map, is_contribution, col, vm, g = _map_or_contribution(NMAP, DK, DV, BS)
    rk = tl.arange(0, DK)
    for j in tl.range(0, steps, num_stages=STAGES):
        chunk = bh * N + start + steps - 1 - j
        decay, ktail, wk = _chunk_map(K, WK, GC, bh, start + steps - 1 - j, N, T, H, DK)
        g = decay * g - _mm(tl.trans(wk), _mm(ktail, g, DOT), DOT)
        g += tl.load(DHS + (chunk + bh) * DK * DV + rk[:, None] * DV + col[None, :], mask=vm & is_contribution,
                     other=0.0)
    tl.store(MT + row * DK * DK + col[None, :] * DK + rk[:, None], g, mask=vm & is_map)
    crow = row + bh if CONTRIB_SKIP else row
    tl.store(CONTRIB + crow * DK * DV + rk[:, None] * DV + col[None, :], g, mask=vm & is_contribution)
