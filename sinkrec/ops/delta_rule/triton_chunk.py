"""The chunked gated delta rule on Triton kernels (triton_kernels*.py), with its own backward.

Three launches forward (prep, state walk, output) and three backward (four where Dk or Dv > 64), no
T×T or per-chunk Python loops: kernels parallel over all chunks and one sequential state walk each
way (in two levels for few long chains at Dk ≤ 64). The module constants at the end pick the
variants (`benchmarks/ops_gpu.py --round` times them; LEGACY restores the path before issue #25).
Every head size: Dk a power of two ≥ 16, Dv ≥ 16; the kernels loop over 64-wide blocks of Dk and Dv,
so shared memory and registers stay those of D = 64. fp32 and bf16/fp16
inputs (fp32 accumulation and state; the products are picked by `_dot`); float64 goes to the PyTorch
chunked path. Eager calls go through a plain `autograd.Function`; under torch.compile the same
kernels run as two custom ops (no graph break). Imported lazily: the package works without Triton.
"""

from __future__ import annotations

import math

import torch
import triton

from . import triton_kernels as kern
from . import triton_kernels_bwd as kern_bwd
from .chunked import delta_rule_chunked
from .sizes import triton_head_sizes_ok

C = 64  # chunk length of the kernels


def _cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ in plain Python (triton.cdiv is a constexpr function: microseconds per host call)."""
    return -(-a // b) if FAST_HOST else triton.cdiv(a, b)


def _pow2(x: int) -> int:
    """The next power of two ≥ x ≥ 1, in plain Python (as `_cdiv`)."""
    return 1 << (x - 1).bit_length() if FAST_HOST else triton.next_power_of_2(x)


def _state_block(programs: int, dv: int, dk: int = 64) -> int:
    """Columns of the state per program of the state walks: small blocks (more programs in flight)
    while the batch·heads are few, wider ones (Wk, K̃ read by fewer programs) once they fill the GPU;
    at most 8192 / Dk (the [Dk, BS] state in registers)."""
    cap = min(STATE_BLOCK, _pow2(dv), max(16, 8192 // dk))
    bs = 16
    limit = STATE_PROGRAMS_WIDE if dk > 64 else STATE_PROGRAMS
    while bs < cap and programs * _cdiv(dv, bs) > limit:
        bs *= 2
    return bs


def _warps(name: str, dk: int, dv: int) -> dict:
    """Launch options of a kernel: WARPS (tuned at D = 64), WARPS_WIDE for the walks once Dk > 64."""
    return WARPS_WIDE[name] if dk > 64 and name in WARPS_WIDE else WARPS[name]


def _walk(kernel, rows: int, dk: int, dv: int, *args, **flags) -> None:
    """One launch of a state walk: `rows` independent chains (or groups) × blocks of the Dv columns."""
    bs = _state_block(rows, dv, dk)
    kernel[(rows, _cdiv(dv, bs))](*args, DK=dk, DV=dv, BS=bs, **flags, **_warps(kernel.__name__, dk, dv))


def _walk_groups(kernel, rows: int, dk: int, dv: int, *args, **flags) -> None:
    """One launch of both first walks of a two-level walk (`state_*_groups`): the groups' maps on the
    first column blocks (Dk columns), their contributions on the others (Dv columns)."""
    bs = _state_block(rows, dv, dk)
    nmap = _cdiv(dk, bs)
    warps = _warps(kernel.__name__.replace("_groups", ""), dk, dv)
    kernel[(rows, nmap + _cdiv(dv, bs))](*args, DK=dk, DV=dv, BS=bs, NMAP=nmap, **flags, **warps)


def _group_size(bh: int, n: int, dk: int, dv: int) -> int:
    """Chunks per group of the state walks: n (one chain each) unless the walk is long and would run
    too few programs to fill the GPU; then ≈ √n, for a walk in two levels (Dk ≤ 64: the groups' maps
    are [Dk, Dk] tiles)."""
    if (dk > 64 or n < STATE_GROUP_MIN_CHUNKS
            or bh * _cdiv(dv, _state_block(bh, dv, dk)) >= STATE_GROUP_BELOW_PROGRAMS):
        return n
    return math.isqrt(n - 1) + 1


def _state_pass(k, wk, u, gc, h0, hs, ht, t: int, h: int, n: int, dot: str) -> None:
    """h_{i+1} = γ_C h_i + K̃ᵀ(U_i − Wk_i h_i) for every chunk: hs[:, i] = h_i (i < n), ht = h_n (and
    hs[:, n] = h_n with KERNEL_FILLS); h0 None: the zero state (no tensor of zeros with KERNEL_FILLS).

    The walk is a chain of n dependent steps. With few chains (small B·H) and many chunks (long T)
    it leaves the GPU nearly idle, so it runs in two levels: groups of g ≈ √n chunks each get their
    map (M_last ⋯ M_first, the walk from the identity) and their contribution (the walk from zero); a
    walk over the groups gives every group's start; a last walk inside the groups gives each chunk's
    state. Four chains of ≈ √n steps instead of one of n."""
    bh, dk, dv = gc.shape[0], k.shape[-1], u.shape[-1]
    g = _group_size(bh, n, dk, dv)
    walk = dict(DOT=dot, STAGES=STATE_STAGES if dk <= 128 else 1)
    chunks = (k, wk, u, gc)
    if h0 is None and not KERNEL_FILLS:
        h0 = torch.zeros_like(ht)
    if g == n:
        return _walk(kern.state_fwd, bh, dk, dv, *chunks, h0, hs, ht, n, n, t, h, **walk,
                     INIT="zero" if h0 is None else "given", ADD_U=True, STORE_STATES=True, STORE_FINAL=True,
                     STORE_LAST=KERNEL_FILLS)
    groups = _cdiv(n, g)
    f32 = dict(device=gc.device, dtype=torch.float32)
    maps, contributions = torch.empty(bh * groups, dk, dk, **f32), torch.empty(bh * groups, dk, dv, **f32)
    if MERGED_GROUP_WALKS:
        _walk_groups(kern.state_fwd_groups, bh * groups, dk, dv, *chunks, maps, contributions, n, g, t, h, **walk)
    else:
        _walk(kern.state_fwd, bh * groups, dk, dk, *chunks, None, None, maps, n, g, t, h, **walk, INIT="identity",
              ADD_U=False, STORE_STATES=False, STORE_FINAL=True)
        _walk(kern.state_fwd, bh * groups, dk, dv, *chunks, None, None, contributions, n, g, t, h, **walk,
              INIT="zero", ADD_U=True, STORE_STATES=False, STORE_FINAL=True)
    starts = torch.empty(bh, groups + 1, dk, dv, **f32)  # fp32: the inner walks start from these
    _walk(kern.state_fwd_maps, bh, dk, dv, maps, contributions, h0, starts, ht, groups, DOT=dot,
          H0_INIT="zero" if h0 is None else "given")
    inplace = INPLACE_GROUPS  # read `starts` in place (no copy of its first `groups` slots)
    _walk(kern.state_fwd, bh * groups, dk, dv, *chunks, starts if inplace else starts[:, :-1].contiguous(), hs, None,
          n, g, t, h, **walk, INIT="starts" if inplace else "given", ADD_U=True, STORE_STATES=True,
          STORE_FINAL=False, STORE_LAST=KERNEL_FILLS)


def _reverse_state_pass(k, wk, gc, dhs, t: int, h: int, n: int, dot: str, dh0=None) -> None:
    """The backward walk g_i = dhs_i + M_iᵀ g_{i+1} from g_n = dhs_n, in place in dhs: in two levels
    like `_state_pass` for few long chains. A group's map P = M_firstᵀ ⋯ M_lastᵀ is stored as Pᵀ.
    `dh0` [B·H, Dk, Dv]: also receives g_0 (else the caller copies it from dhs)."""
    bh, dk, dv = gc.shape[0], k.shape[-1], dhs.shape[-1]
    g = _group_size(bh, n, dk, dv)
    walk = dict(DOT=dot, STAGES=STATE_STAGES if dk <= 128 else 1)
    chunks = (k, wk, gc)
    first = dict(DH0=dh0, STORE_FIRST=dh0 is not None)
    if g == n:
        return _walk(kern.state_bwd, bh, dk, dv, *chunks, dhs, None, None, n, n, t, h, **walk, INIT="end",
                     ADD_E=True, STORE_STATES=True, FINAL="none", **first)
    groups = _cdiv(n, g)
    f32 = dict(device=gc.device, dtype=torch.float32)
    maps_t = torch.empty(bh * groups, dk, dk, **f32)
    if MERGED_GROUP_WALKS and INPLACE_GROUPS:  # no cat, no copies: the kernels read and write `ends` in place
        ends = torch.empty(bh, groups + 1, dk, dv, **f32)
        _walk_groups(kern.state_bwd_groups, bh * groups, dk, dv, *chunks, dhs, maps_t, ends, n, g, t, h, **walk,
                     CONTRIB_SKIP=True)
        _walk(kern.state_bwd_maps, bh, dk, dv, maps_t, ends, groups, DOT=dot, END=dhs, END_N=n, FROM_END=True)
        return _walk(kern.state_bwd, bh * groups, dk, dv, *chunks, dhs, ends, None, n, g, t, h, **walk, INIT="ends",
                     ADD_E=True, STORE_STATES=True, FINAL="none", **first)
    contributions = torch.empty(bh, groups, dk, dv, **f32)
    if MERGED_GROUP_WALKS:
        _walk_groups(kern.state_bwd_groups, bh * groups, dk, dv, *chunks, dhs, maps_t, contributions, n, g, t, h,
                     **walk)
    else:
        _walk(kern.state_bwd, bh * groups, dk, dk, *chunks, None, None, maps_t, n, g, t, h, **walk,
              INIT="identity", ADD_E=False, STORE_STATES=False, FINAL="transposed")
        _walk(kern.state_bwd, bh * groups, dk, dv, *chunks, dhs, None, contributions, n, g, t, h, **walk,
              INIT="zero", ADD_E=True, STORE_STATES=False, FINAL="plain")
    ends = torch.cat([contributions, dhs[:, n:]], 1)  # the walk over the groups leaves g at each group's start
    _walk(kern.state_bwd_maps, bh, dk, dv, maps_t, ends, groups, DOT=dot)
    _walk(kern.state_bwd, bh * groups, dk, dv, *chunks, dhs, ends[:, 1:].contiguous(), None, n, g, t, h, **walk,
          INIT="given", ADD_E=True, STORE_STATES=True, FINAL="none", **first)


def _dot(dtype: torch.dtype, dk: int, dv: int = 64) -> str:
    """Products of the chunk-parallel kernels: tf32x3 (fp32-accurate) for fp32 inputs; LOW_PRECISION_DOT
    for bf16 inputs where every block is 64 wide (Dk ≥ 64, Dv > 32: bf16 products of 32-wide tiles
    crashed with an illegal memory access at Dk = 32 on an H200 with Triton 3.6); tf32 otherwise, except
    at Dk = 256, where tf32 products failed on an H200 with Triton 3.6 (an illegal memory access with
    fp16 inputs at Dv = 256, wrong states with bf16 inputs at Dv = 16) and the fp32 path's tf32x3 passes."""
    if dtype == torch.float32:
        return "tf32x3"
    if dtype == torch.bfloat16 and dk >= 64 and dv > 32:
        return LOW_PRECISION_DOT
    return "tf32x3" if dk >= 256 else "tf32"


def fused_backward(shapes: dict) -> bool:
    """The fused `prep_bwd` only on one 64-wide block of Dk and of Dv (Dk = 64, 32 < Dv ≤ 64): with
    narrower blocks it made an illegal memory access on an H100 with Triton 3.6 (Dk = Dv = 16, fp32 and
    bf16, every batch and length tried: benchmarks/results/repro_small_heads-h100-f161462.json), which
    the interpreter cannot show; the two-kernel path passed the GPU check there."""
    return FUSED_BWD and shapes["NK"] == 1 and shapes["NV"] == 1 and shapes["KB"] == 64 and shapes["VB"] == 64


def _state_dot(dot: str) -> str:
    """The state walks chain two products per chunk, so their rounding compounds: STATE_DOT (tf32 unless
    a round shows bf16 walks accurate enough) where the other kernels use bf16 products."""
    return STATE_DOT if dot == "bf16" else dot


def _shapes(dtype: torch.dtype, dk: int, dv: int) -> dict:
    """Compile-time sizes, 64-wide (at most) blocks and product precision of the chunk-parallel kernels."""
    kb, vb = min(_pow2(dk), 64), min(_pow2(dv), 64)
    return dict(DK=dk, DV=dv, KB=kb, VB=vb, NK=_cdiv(dk, kb), NV=_cdiv(dv, vb), DOT=_dot(dtype, dk, dv))


def _inverse(dot: str) -> dict:
    """prep_fwd's way to T = (I + A)⁻¹ and the products of its inner (4×4 → 16×16) level."""
    return dict(INV=INVERSE, INV_DOT=INVERSE_DOT if dot == "bf16" else dot)


def _store_dtype(dtype: torch.dtype, dk: int, dv: int) -> torch.dtype:
    """Operands that every consumer rounds to bf16 anyway (bf16 products) are stored in bf16."""
    return torch.bfloat16 if _dot(dtype, dk, dv) == "bf16" else torch.float32


def _forward_outputs(q, k, v, train: bool) -> tuple[torch.Tensor, ...]:
    """The forward's outputs, unfilled: o, final state, then what the backward reads (T only when
    `train`, else an empty tensor: a custom op's outputs are always tensors). Also the op's fake."""
    b, t, h, dk = k.shape
    dv, n = v.shape[-1], _cdiv(t, C)
    f32 = dict(device=q.device, dtype=torch.float32)
    store = dict(device=q.device, dtype=_store_dtype(q.dtype, dk, dv))
    t_store = store if T_LOW_PRECISION else f32  # T: read only by the backward's bf16 products
    return (q.new_empty(b, t, h, dv), q.new_empty(b, h, dk, dv, **f32),
            q.new_empty(b * h, n, C, C, **t_store) if train else q.new_empty(0, **f32),
            q.new_empty(b * h, n, C, dv, **(store if U_LOW_PRECISION else f32)),
            q.new_empty(b * h, n, C, dk, **store), q.new_empty(b * h, n, C, **f32),
            q.new_empty(b * h, n + 1, dk, dv, **store))


def _forward(q, k, v, g, beta, scale: float, h0, train: bool):
    """Launches prep_fwd, the state walk and output_fwd into `_forward_outputs`."""
    b, t, h, dk = k.shape
    dv, n = v.shape[-1], _cdiv(t, C)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    shapes = _shapes(q.dtype, dk, dv)
    o, ht, tt, u, wk, gc, hs = outputs = _forward_outputs(q, k, v, train)
    kern.prep_fwd[(n, b * h)](k, v, g, beta, tt if train else None, u, wk, gc, t, n, h, **shapes, SAVE_T=train,
                              **_inverse(shapes["DOT"]), **_warps("prep_fwd", dk, dv))
    h0 = None if h0 is None else h0.float().contiguous()
    if train and not KERNEL_FILLS:
        hs[:, n].zero_()  # slot n is unused (the final state goes to ht), but an op's outputs must be defined
    _state_pass(k, wk, u, gc, h0, hs, ht, t, h, n, _state_dot(shapes["DOT"]))
    kern.output_fwd[(n, b * h, shapes["NV"])](q, k, gc, hs, u, wk, o, scale, t, n, h,
                                              **{key: shapes[key] for key in ("DK", "DV", "KB", "VB", "NK", "DOT")},
                                              **_warps("output_fwd", dk, dv))
    return outputs


def _gradients(q, k, v, beta, g_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The backward's outputs, unfilled and contiguous whatever the inputs' strides: dq, dk, dv, dg,
    dβ, dh0. Also the op's fake."""
    b, t, h, dk = k.shape
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), q.new_empty(b, t, h, dtype=g_dtype),
            beta.new_empty(beta.shape), q.new_empty(b, h, dk, v.shape[-1], dtype=torch.float32))


def _backward(q, k, v, beta, g_dtype, tt, u, wk, gc, hs, do, dht, scale: float):
    """The four backward launches (and the state walk's) into `_gradients`."""
    b, t, h, dk = k.shape
    dv = v.shape[-1]
    n = gc.shape[1]
    q, k, v, beta, do = (x.contiguous() for x in (q, k, v, beta, do))
    shapes = _shapes(q.dtype, dk, dv)
    f32 = dict(device=q.device, dtype=torch.float32)
    dq, dk_, dv_, dg, dbeta, dh0 = grads = _gradients(q, k, v, beta, g_dtype)
    fused = fused_backward(shapes)
    dko, dw = torch.empty(b * h, n, C, dk, **f32), torch.empty(b * h, n, C, dv, **f32)
    dgo = torch.empty(b * h, n, C, **f32)
    dhs = torch.empty(b * h, n + 1, dk, dv, **f32)
    fills = {}
    if KERNEL_FILLS:  # output_bwd fills slot n, the walk writes dh0
        fills = dict(DHT=None if dht is None else dht.reshape(b * h, dk, dv).contiguous(),
                     SLOT_N="zero" if dht is None else "given")
    elif dht is None:
        dhs[:, n].zero_()
    else:
        dhs[:, n].copy_(dht.reshape(b * h, dk, dv))
    ws = None if fused else torch.empty(b * h, n, C, dv, **f32)
    grid = (n, b * h)
    kern_bwd.output_bwd[grid](q, k, gc, hs, u, wk, do, dq, dko, dgo, dw, ws, dhs, scale, t, n, h, **shapes, **fills,
                              STORE_W=not fused, **_warps("output_bwd", dk, dv))
    _reverse_state_pass(k, wk, gc, dhs, t, h, n, _state_dot(shapes["DOT"]),
                        dh0.view(b * h, dk, dv) if KERNEL_FILLS else None)
    if fused:
        kern_bwd.prep_bwd[grid](k, v, beta, gc, tt, u, wk, hs, dhs, dw, dko, dgo, dk_, dv_, dg, dbeta, n, t, h,
                                **{key: shapes[key] for key in ("DK", "DV", "KB", "VB", "DOT")},
                                **_warps("prep_bwd", dk, dv))
    else:
        dkb, du = torch.empty(b * h, n, C, dk, **f32), torch.empty(b * h, n, C, dv, **f32)
        kern_bwd.prep_bwd_state[grid](k, gc, tt, ws, hs, dhs, dw, du, dkb, dko, dgo, n, t, h, **shapes,
                                      **_warps("prep_bwd_state", dk, dv))
        kern_bwd.prep_bwd_wy[grid](k, v, beta, gc, u, wk, dw, dkb, dko, dgo, dk_, dv_, dg, dbeta, t, n, h, **shapes,
                                   **_warps("prep_bwd_wy", dk, dv))
    if not KERNEL_FILLS:
        dh0.copy_(dhs[:, 0].view(b, h, dk, dv))
    return grads


class _DeltaRule(torch.autograd.Function):
    """The eager path: the kernels straight from autograd, without the custom ops' dispatch."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, h0):
        if KERNEL_FILLS:  # an unused output's gradient stays None (no tensor of zeros to launch and read)
            ctx.set_materialize_grads(False)
        o, ht, *saved = _forward(q, k, v, g, beta, scale, h0, True)
        ctx.save_for_backward(q, k, v, beta, *saved)
        ctx.scale, ctx.g_dtype, ctx.has_h0 = scale, g.dtype, h0 is not None
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, *saved = ctx.saved_tensors
        if do is None:
            do = torch.zeros(*q.shape[:3], v.shape[-1], device=q.device, dtype=q.dtype)
        dq, dk, dv, dg, dbeta, dh0 = _backward(q, k, v, beta, ctx.g_dtype, *saved, do, dht, ctx.scale)
        return dq, dk, dv, dg, dbeta, None, (dh0 if ctx.has_h0 else None)


# Registered as torch.library custom ops so torch.compile keeps them inside its graph as opaque
# calls: no graph break, so mode="reduce-overhead" captures the whole step in one CUDA graph.
@torch.library.custom_op("sinkrec::delta_rule_fwd", mutates_args=(), schema=(
    "(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float scale, Tensor? h0, bool train) -> (" +
    ", ".join(["Tensor"] * 7) + ")"))
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, scale: float,
            h0: torch.Tensor | None, train: bool) -> tuple[torch.Tensor, ...]:
    return _forward(q, k, v, g, beta, scale, h0, train)


@_fwd_op.register_fake
def _(q, k, v, g, beta, scale, h0, train):
    return _forward_outputs(q, k, v, train)


@torch.library.custom_op("sinkrec::delta_rule_bwd", mutates_args=(), schema=(
    "(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor g_like, Tensor tt, Tensor u, Tensor wk, "
    "Tensor gc, Tensor hs, Tensor do, Tensor? dht, float scale) -> (" + ", ".join(["Tensor"] * 6) + ")"))
def _bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g_like: torch.Tensor,
            tt: torch.Tensor, u: torch.Tensor, wk: torch.Tensor, gc: torch.Tensor, hs: torch.Tensor,
            do: torch.Tensor, dht: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, ...]:
    return _backward(q, k, v, beta, g_like.dtype, tt, u, wk, gc, hs, do, dht, scale)


@_bwd_op.register_fake
def _(q, k, v, beta, g_like, tt, u, wk, gc, hs, do, dht, scale):
    return _gradients(q, k, v, beta, g_like.dtype)


def _setup_context(ctx, inputs, output):
    q, k, v, g, beta, scale, h0, _ = inputs
    _, _, tt, u, wk, gc, hs = output
    # g itself is not needed, only its dtype: an empty tensor of it carries that through the op
    ctx.save_for_backward(q, k, v, beta, g.new_empty(0), tt, u, wk, gc, hs)
    ctx.scale = scale
    ctx.has_h0 = h0 is not None


def _autograd_backward(ctx, do, dht, *unused):
    q, k, v, beta, g_like, tt, u, wk, gc, hs = ctx.saved_tensors
    if do is None:
        do = torch.zeros(*q.shape[:3], v.shape[-1], device=q.device, dtype=q.dtype)
    dq, dk, dv, dg, dbeta, dh0 = _bwd_op(q, k, v, beta, g_like, tt, u, wk, gc, hs, do, dht, ctx.scale)
    return dq, dk, dv, dg, dbeta, None, (dh0 if ctx.has_h0 else None), None


_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def opcheck_ops(q, k, v, g, beta, h0=None, scale: float = 0.125) -> dict[str, dict[str, str]]:
    """`torch.library.opcheck` of both ops (schema, fake tensors incl. strides, autograd registration,
    AOT dispatch): what torch.compile relies on. Used by the tests and the GPU check."""
    grad = [x.detach().requires_grad_() for x in (q, k, v, g, beta)]
    state = None if h0 is None else h0.detach().requires_grad_()
    fwd = torch.library.opcheck(torch.ops.sinkrec.delta_rule_fwd.default, (*grad, scale, state, True))
    q, k, v, g, beta = (x.detach() for x in (q, k, v, g, beta))
    with torch.no_grad():
        _, _, *saved = torch.ops.sinkrec.delta_rule_fwd(q, k, v, g, beta, scale, h0, True)
    dht = None if h0 is None else torch.randn_like(h0)
    bwd = torch.library.opcheck(torch.ops.sinkrec.delta_rule_bwd.default,
                                (q, k, v, beta, g.new_empty(0), *saved, torch.randn_like(v), dht, scale))
    return {name: {test: str(outcome) for test, outcome in report.items()} for name, report in
            (("fwd", fwd), ("bwd", bwd))}


# launch options, picked by `benchmarks/ops_gpu.py --sweep` on an H200 (bf16, H=4, D=64); prep_fwd 2 → 4 warps
# untimed with the product-only inverse (INVERSE "nilpotent": ≈ 10 products of [64, 64] tiles, 64 fp32 registers
# per tile and thread at 2 warps)
WARPS = {"prep_fwd": {"num_warps": 4}, "state_fwd": {"num_warps": 4}, "output_fwd": {"num_warps": 4},
         "output_bwd": {"num_warps": 4}, "state_bwd": {"num_warps": 2}, "prep_bwd_state": {"num_warps": 4},
         "prep_bwd_wy": {"num_warps": 4}, "state_fwd_maps": {"num_warps": 4}, "state_bwd_maps": {"num_warps": 2},
         "prep_bwd": {"num_warps": 8}}  # prep_bwd (new, untuned): twice the live [64, 64] tiles of the two it fuses
WARPS_WIDE = {"state_fwd": {"num_warps": 4}, "state_bwd": {"num_warps": 8}}  # Dk > 64: [64, Dk] tiles per step
# (state_fwd at 4 warps: 1.968 → 1.844 ms alone at 2×16384 H16 D128 on an H100, and see STATE_PROGRAMS_WIDE)
LOW_PRECISION_DOT = "bf16"  # products for bf16/fp16 inputs: "tf32" or "bf16" (operands rounded to bf16)
STATE_BLOCK = 64  # at most this many state columns per program of the state walks
STATE_PROGRAMS = 64  # ... and wider blocks once more programs than this would run (H200, ops_gpu_sweep-issue20:
# forward 2.39 → 2.04 ms at 2×16384 H16 D128, 0.74 → 0.67 at 1×8192 H16 D128, 0.53 → 0.51 at 8×8192 H4 D64 vs 264)
STATE_PROGRAMS_WIDE = 128  # the same once Dk > 64 (H100, ops_gpu_round-h100-706396d: with state_fwd at 4 warps,
# forward 1.968 → 1.482 ms at 2×16384 H16 D128; 128 programs alone 1.597, 264 2.193)
STATE_GROUP_MIN_CHUNKS = 64  # the state walks go two-level from this many chunks ...
STATE_GROUP_BELOW_PROGRAMS = 64  # ... when it would run fewer programs than this (H200, `ops_gpu.py --sweep`:
# two levels won at 16 and 32 programs, lost at 128)
STATE_DOT = "tf32"  # the walks' products where the others are bf16: "bf16" halves their operand bytes and doubles
# tensor-core rate on the serial chain (fla's choice), but each chunk's rounding then enters the carried state
STATE_STAGES = 2  # software-pipelining stages of the state walks' loops (Dk ≤ 128; 1 above)
# Round of issue #25 (benchmarks/delta_rule_gpu_round.sh times each against LEGACY, the path before it):
INVERSE = "nilpotent"  # T's 16×16 diagonal blocks: "nilpotent" (4×4 blocks, then two block-merges, all
# 64×64 products) or "substitution" (15 dependent forward-substitution steps on [4, 16, 16])
INVERSE_DOT = "tf32"  # products of the inverse's inner level where the kernels use bf16 products ("bf16": same)
T_LOW_PRECISION = True  # save T in bf16 where its only consumers (the backward's bf16 products) round it anyway
U_LOW_PRECISION = True  # save U = T(β⊙V) in bf16 where the products are bf16 (as Wk and the states already are):
# U is written once and read 2-4 times; its fp32 copy was the largest chunk tensor (the 64×8192 forward is
# memory-bound: ≈ 56 KB per chunk read or written); adds one bf16 rounding to U, which bf16 products made anyway
FUSED_BWD = True  # prep_bwd_state + prep_bwd_wy as one kernel (`prep_bwd`) where Dk = 64, 32 < Dv ≤ 64
KERNEL_FILLS = True  # the kernels write the state slots and dh0 that zero_/copy_ launches used to fill
MERGED_GROUP_WALKS = True  # a two-level walk's map and contribution walks in one launch (they are independent)
INPLACE_GROUPS = True  # two-level walks read the groups' starts / ends in place (no contiguous copies, no cat)
FAST_HOST = True  # host arithmetic of the launches in plain Python (30 triton.cdiv calls per step cost ≈ 100 µs)
LEGACY = {"FAST_HOST": False, "INVERSE": "substitution", "T_LOW_PRECISION": False, "U_LOW_PRECISION": False,
          "FUSED_BWD": False, "KERNEL_FILLS": False, "MERGED_GROUP_WALKS": False, "INPLACE_GROUPS": False,
          "WARPS": {**WARPS, "prep_fwd": {"num_warps": 2}}}  # 2 warps: tuned for the substitution


def check_head_sizes(dk: int, dv: int) -> None:
    """Raise ValueError unless the kernels take these head sizes (Dk a power of two ≥ 16, Dv ≥ 16)."""
    if not triton_head_sizes_ok(dk, dv):
        raise ValueError(f"the triton delta rule needs Dk a power of two ≥ 16 and Dv ≥ 16 (got Dk={dk}, Dv={dv})")


def delta_rule_triton(q, k, v, g, beta, scale, initial_state=None):
    """Same contract as `delta_rule_chunked` (dense batch, [B, T, H, D])."""
    check_head_sizes(q.shape[-1], v.shape[-1])
    if q.dtype == torch.float64:  # the kernels compute in fp32; float64 stays exact on the PyTorch path
        return delta_rule_chunked(q, k, v, g, beta, scale, initial_state)
    inputs = (q, k, v, g, beta, initial_state)
    train = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)
    if torch.compiler.is_compiling():
        o, ht, *_ = _fwd_op(q, k, v, g, beta, float(scale), initial_state, train)
    elif train:
        o, ht = _DeltaRule.apply(q, k, v, g, beta, float(scale), initial_state)
    else:
        o, ht, *_ = _forward(q, k, v, g, beta, float(scale), initial_state, False)
    return o, ht
