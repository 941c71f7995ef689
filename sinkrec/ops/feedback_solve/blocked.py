"""The blocked feedback solve: s = (I − B)⁻¹ f without the T×T matrix, memory linear in T.

B[t, j] = γ_t α_{t,j}, α_{t,j} = exp(ℓ_{t,j} − lse_t) over the strict past, ℓ = scale · q_t·k_j.

Forward (T padded to a multiple of the leaf S; padded rows have f = γ = 0 and sit after every real
row, so they change nothing):
1. lse_t for every row, by a flash-style pass without values (row 0, with no past, gets NO_PAST so
   every exp(ℓ − lse) of it is 0). Knowing the normaliser, any block of α is exp(ℓ − lse) ≤ 1.
2. Each leaf (S consecutive rows) gets its own small matrix P_I (strict lower, S×S) and the inverse
   Inv_I = (I − γ P_I)⁻¹, all leaves at once (batched, linear in T: T·S numbers).
3. Blocked forward substitution, leaf after leaf: s_I = Inv_I (f_I + γ_I ⊙ h_I), then the leaf's
   outputs are pushed to every later row: h_rows += exp(ℓ_{rows,I} − lse_rows) s_I, an attention-style
   product with the known normaliser (right-looking: no atomics, one wide launch per leaf).
   h_t = Σ_{j<t} α_{t,j} s_j is kept (its intra-leaf part added at the end) for the backward.

Backward (custom, never T×T): u = (I − B)⁻ᵀ g solved the same way from the last leaf back
(u_I = Inv_Iᵀ (g_I + acc_I), then acc_keys += Pᵀ (γ u_I) for every earlier key); df = u;
dγ_t = δ_t = u_t·h_t; dℓ_{t,j} = γ_t α_{t,j} (u_t·s_j − δ_t) as in flash attention's backward with
O = h and dO = γu; dq, dk from dℓ.

The attention-style pieces live in a kernel set: `TorchKernels` here (any device, float64 too),
`triton_kernels.TritonKernels` on the GPU. The leaf inverses and the orchestration are shared.
"""

from __future__ import annotations

import torch

NO_PAST = 1e30  # lse of a row with no past: exp(ℓ − NO_PAST) = 0


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


class TorchKernels:
    """The attention-style products in plain PyTorch. Temporaries are at most CHUNK × T (linear in T)."""

    CHUNK = 2048  # rows (or keys) per temporary in the update products

    @staticmethod
    def lse(q, k, scale: float, block: int) -> torch.Tensor:
        """[B, T]: log Σ_{j<t} exp(ℓ_{t,j}); NO_PAST where t has no past."""
        b, t, _ = q.shape
        out = q.new_empty(b, t)
        for r0 in range(0, t, block):
            r1 = min(t, r0 + block)
            logits = (q[:, r0:r1] @ k[:, :r1].transpose(-1, -2)) * scale
            past = torch.arange(r1, device=q.device)[None, :] < torch.arange(r0, r1, device=q.device)[:, None]
            lse = torch.logsumexp(logits.masked_fill(~past, float("-inf")), -1)
            out[:, r0:r1] = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, NO_PAST))
        return out

    @classmethod
    def fwd_update(cls, q, k, lse, s_leaf, h, row0: int, key0: int, scale: float) -> None:
        """h[:, row0:] += exp(ℓ[row0:, key0:key0+S] − lse) @ s_leaf (all keys before all rows)."""
        keys = k[:, key0: key0 + s_leaf.shape[1]].transpose(-1, -2)
        for r0 in range(row0, h.shape[1], cls.CHUNK):
            r1 = min(h.shape[1], r0 + cls.CHUNK)
            p = torch.exp((q[:, r0:r1] @ keys) * scale - lse[:, r0:r1, None])
            h[:, r0:r1] += p @ s_leaf

    @classmethod
    def bwd_update(cls, q, k, lse, w_leaf, acc, q0: int, scale: float) -> None:
        """acc[:, :q0] += exp(ℓ[q0:q0+S, :q0] − lse)ᵀ @ w_leaf (all keys before all rows)."""
        rows = slice(q0, q0 + w_leaf.shape[1])
        qt, lse_r = q[:, rows].transpose(-1, -2), lse[:, rows, None].transpose(-1, -2)
        for c0 in range(0, q0, cls.CHUNK):
            c1 = min(q0, c0 + cls.CHUNK)
            pt = torch.exp((k[:, c0:c1] @ qt) * scale - lse_r)  # [B, keys, S]
            acc[:, c0:c1] += pt @ w_leaf

    @staticmethod
    def leaves(q, k, gamma, lse, scale: float, leaf: int, work: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per leaf: P_I (strict lower, [B, n, S, S]) and Inv_I = (I − γ P_I)⁻¹, in the work dtype."""
        return _leaves(q.to(work), k.to(work), gamma, lse, scale, leaf)

    @staticmethod
    def fwd_step(inv, i: int, fw, gw, h, s) -> torch.Tensor:
        """s_I = Inv_I (f_I + γ_I h_I) into s; returns the leaf as the push operand."""
        leaf = inv.shape[-1]
        r = slice(i * leaf, (i + 1) * leaf)
        s[:, r] = inv[:, i] @ (fw[:, r] + gw[:, r, None] * h[:, r])
        return s[:, r].contiguous()

    @staticmethod
    def bwd_step(inv, i: int, g, gw, acc, u) -> torch.Tensor:
        """u_I = Inv_Iᵀ (g_I + acc_I) into u; returns γ_I u_I as the push operand."""
        leaf = inv.shape[-1]
        r = slice(i * leaf, (i + 1) * leaf)
        u[:, r] = inv[:, i].transpose(-1, -2) @ (g[:, r] + acc[:, r])
        return (gw[:, r, None] * u[:, r]).contiguous()

    @staticmethod
    def add_intra(p_leaf, s, h) -> None:
        """h += P_I s_I for every leaf (the intra-leaf part of h)."""
        b, n, leaf, _ = p_leaf.shape
        h += (p_leaf @ s.view(b, n, leaf, -1)).view(h.shape)

    @staticmethod
    def dqdk(q, k, lse, gamma, s, u, delta, scale: float, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """dℓ_{t,j} = γ_t α_{t,j} (u_t·s_j − δ_t) (j < t); dq = scale·dℓ k, dk = scale·dℓᵀ q."""
        t = q.shape[1]
        dq, dk = torch.zeros_like(q), torch.zeros_like(k)
        for r0 in range(0, t, block):
            r1 = min(t, r0 + block)
            past = torch.arange(r1, device=q.device)[None, :] < torch.arange(r0, r1, device=q.device)[:, None]
            logits = (q[:, r0:r1] @ k[:, :r1].transpose(-1, -2)) * scale - lse[:, r0:r1, None]
            p = torch.where(past, torch.exp(logits.masked_fill(~past, 0.0)), torch.zeros_like(logits))
            dp = u[:, r0:r1] @ s[:, :r1].transpose(-1, -2)
            dl = (gamma[:, r0:r1, None] * scale) * p * (dp - delta[:, r0:r1, None])
            dq[:, r0:r1] = dl @ k[:, :r1]
            dk[:, :r1] += dl.transpose(-1, -2) @ q[:, r0:r1]
        return dq, dk


def _leaves(q, k, gamma, lse, scale: float, leaf: int, inverse: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per leaf: P_I (strict lower, [B, n, S, S]) and Inv_I = (I − γ P_I)⁻¹ (None without `inverse`), in the
    work dtype."""
    b, t, dq = q.shape
    n = t // leaf
    qs, ks = q.reshape(b, n, leaf, dq), k.reshape(b, n, leaf, dq)
    logits = (qs @ ks.transpose(-1, -2)) * scale - lse.view(b, n, leaf, 1)
    strict = torch.ones(leaf, leaf, dtype=torch.bool, device=q.device).tril(-1)
    p = torch.where(strict, torch.exp(logits.masked_fill(~strict, 0.0)), torch.zeros_like(logits))
    if not inverse:
        return p, None
    eye = torch.eye(leaf, dtype=p.dtype, device=p.device)
    m = eye - gamma.reshape(b, n, leaf, 1) * p
    inv = torch.linalg.solve_triangular(m, eye.expand_as(m), upper=False, unitriangular=True)
    return p, inv


def _pad(x: torch.Tensor, t: int) -> torch.Tensor:
    if x.shape[1] == t:
        return x.contiguous()
    pad = x.new_zeros(x.shape[0], t - x.shape[1], *x.shape[2:])
    return torch.cat([x, pad], 1)


class _BlockedSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, q, k, gamma, scale, leaf, kern, kdtype):
        b, t, d = f.shape
        tp = _round_up(t, leaf)
        work = torch.promote_types(f.dtype, torch.float32)
        # q, k in the kernels' dtype (the work dtype for torch, the input dtype for Triton)
        qk = [_pad(x.to(kdtype), tp) for x in (q, k)]
        fw, gw = _pad(f.to(work), tp), _pad(gamma.to(work), tp)
        lse = kern.lse(*qk, scale, leaf)
        p_leaf, inv = kern.leaves(*qk, gw, lse, scale, leaf, work)
        n = tp // leaf
        h = fw.new_zeros(b, tp, d)
        s = fw.new_empty(b, tp, d)
        for i in range(n):
            s_push = kern.fwd_step(inv, i, fw, gw, h, s)
            if i + 1 < n:
                kern.fwd_update(*qk, lse, s_push, h, (i + 1) * leaf, i * leaf, scale)
        kern.add_intra(p_leaf, s, h)
        ctx.save_for_backward(*qk, gw, lse, inv, s, h)
        ctx.meta = (t, scale, leaf, kern, f.dtype, q.dtype, gamma.dtype)
        return s[:, :t].to(f.dtype)

    @staticmethod
    def backward(ctx, grad):
        q, k, gw, lse, inv, s, h = ctx.saved_tensors
        t, scale, leaf, kern, f_dtype, q_dtype, g_dtype = ctx.meta
        b, tp, d = s.shape
        n = tp // leaf
        g = _pad(grad.to(s.dtype), tp)
        u = torch.empty_like(s)
        acc = torch.zeros_like(s)
        for i in reversed(range(n)):
            w_push = kern.bwd_step(inv, i, g, gw, acc, u)
            if i > 0:
                kern.bwd_update(q, k, lse, w_push, acc, i * leaf, scale)
        delta = (u * h).sum(-1)
        dq, dk = kern.dqdk(q, k, lse, gw, s, u, delta, scale, leaf)
        return (u[:, :t].to(f_dtype), dq[:, :t].to(q_dtype), dk[:, :t].to(q_dtype), delta[:, :t].to(g_dtype),
                None, None, None, None)


def feedback_solve_blocked(f: torch.Tensor, qb: torch.Tensor, kb: torch.Tensor, gamma: torch.Tensor,
                           scale: float | None = None, block: int = 256) -> torch.Tensor:
    """f [B, T, D], qb/kb [B, T, Dq], gamma [B, T] → s [B, T, D] in plain PyTorch (any device,
    float64 too), computed in ≥ fp32; `block` is the leaf S (smaller when T is short)."""
    scale = qb.shape[-1] ** -0.5 if scale is None else scale
    leaf = min(block, _round_up(f.shape[1], 8))
    work = torch.promote_types(f.dtype, torch.float32)
    return _BlockedSolve.apply(f, qb, kb, gamma, scale, leaf, TorchKernels, work)
