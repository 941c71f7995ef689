"""Chunkwise (WY / UT-transform) gated delta rule in plain PyTorch; differentiable by autograd.

Inside a chunk of C steps with cumulative log-decay G_t and start state h0, the recurrence is
    h_t = α_t h_{t−1} + k_t w_tᵀ,   w_t = β_t (v_t − α_t h_{t−1}ᵀ k_t),
which unrolls to h_t = γ_t h0 + Σ_{i≤t} (γ_t/γ_i) k_i w_iᵀ with γ_t = exp(G_t). Substituting gives a
unit-lower-triangular system (I + A) W = β⊙V − (β⊙γ⊙K) h0 with A[t, i] = β_t (γ_t/γ_i) k_tᵀk_i (i < t),
so W = U − Wk h0 where U = T(β⊙V), Wk = T(β⊙γ⊙K), T = (I + A)⁻¹. Everything except the h0 terms
is computed for all chunks at once; only the state hand-off runs chunk by chunk. Memory per head
is O(T·D + (T/C)·D²).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def state_pass(U: torch.Tensor, Wk: torch.Tensor, k_tail: torch.Tensor, chunk_decay: torch.Tensor,
               h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The only sequential part: W_i = U_i − Wk_i h_i,  h_{i+1} = d_i h_i + k_tailᵢᵀ W_i.

    U [B, H, N, C, Dv], Wk and k_tail [B, H, N, C, Dk], chunk_decay [B, H, N], h0 [B, H, Dk, Dv]
    → (W [B, H, N, C, Dv], states at every chunk boundary [B, H, N + 1, Dk, Dv]).
    """
    state, ws, states = h0, [], [h0]
    for i in range(U.shape[2]):
        w = U[:, :, i] - Wk[:, :, i] @ state
        state = chunk_decay[:, :, i, None, None] * state + k_tail[:, :, i].transpose(-1, -2) @ w
        ws.append(w)
        states.append(state)
    return torch.stack(ws, 2), torch.stack(states, 2)


def delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                       scale: float, initial_state: torch.Tensor | None = None, chunk_size: int = 64
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `delta_rule_reference` (dense batch, [B, T, H, D] layout)."""
    if q.dtype in (torch.float16, torch.bfloat16):  # this path computes in fp32 for half inputs
        o, state = delta_rule_chunked(q.float(), k.float(), v.float(), g.float(), beta.float(), scale,
                                      initial_state, chunk_size)
        return o.to(q.dtype), state
    b, t, h, dk = k.shape
    dv = v.shape[-1]
    c = chunk_size
    pad = (-t) % c
    if pad:  # padded steps have g = β = 0: no write, no decay, so the final state is unchanged
        q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (F.pad(x, (0, 0, 0, pad)) for x in (g, beta))
    n = (t + pad) // c
    # [B, H, N, C, D] layout; gates [B, H, N, C]
    q, k, v = (x.transpose(1, 2).reshape(b, h, n, c, x.shape[-1]) for x in (q, k, v))
    g, beta = (x.transpose(1, 2).reshape(b, h, n, c) for x in (g, beta))
    q = q * scale

    # within-chunk cumulative log decay, summed in ≥ fp32
    G = g.to(torch.promote_types(g.dtype, torch.float32)).cumsum(-1).to(q.dtype)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    strict = causal.clone().fill_diagonal_(False)
    diff = G[..., :, None] - G[..., None, :]  # G_t − G_i
    decay = torch.exp(diff.masked_fill(~causal, float("-inf")))  # γ_t/γ_i for i ≤ t, else 0

    A = (beta[..., None] * (k @ k.transpose(-1, -2)) * decay).masked_fill(~strict, 0.0)
    eye = torch.eye(c, dtype=q.dtype, device=q.device)
    T = torch.linalg.solve_triangular(eye + A, eye.expand_as(A), upper=False, unitriangular=True)
    U = T @ (beta[..., None] * v)
    Wk = T @ (beta[..., None] * G.exp()[..., None] * k)
    attn = (q @ k.transpose(-1, -2)) * decay  # already zero above the diagonal
    k_tail = k * torch.exp(G[..., -1:] - G)[..., None]  # (γ_C/γ_i) k_i

    h0 = initial_state.to(q.dtype) if initial_state is not None else q.new_zeros(b, h, dk, dv)
    W, states = state_pass(U, Wk, k_tail, G[..., -1].exp(), h0)
    o = (q * G.exp()[..., None]) @ states[:, :, :n] + attn @ W
    o = o.reshape(b, h, n * c, dv)[:, :, :t].transpose(1, 2)
    return o, states[:, :, n]
