"""Sessa layer (paper Eqs. 9–22): attention inside a recurrent feedback path.

    x̃ = LayerNorm(x);  a, g = split(x̃ W_in + b_in);  ā = GELU(a);  s = Mixer(ā);  y = x + (s ⊙ g) W_out + b_out

Mixer: a causal multi-head attention branch with interleaved RoPE gives f; a single-head feedback
branch of width D (no positions) gives α^fb over the strict past; a per-token gain
γ = γ_max·tanh(b_γ + ⟨w_γ, ā⟩); then s = (I − γ α^fb)⁻¹ f. With `mixer="attention"` the feedback is
off (s = f: the Transformer baseline, same block); with `mixer="gdn"` a gated-delta-rule mixer
takes its place (the recurrent baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.feedback_solve import feedback_solve
from .gated_deltanet import DeltaCache, GatedDeltaNet


def rope(x: torch.Tensor, start: int, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding on interleaved pairs (x[2i], x[2i+1]); x [B, T, H, dh], positions start…start+T−1."""
    t, dh = x.shape[1], x.shape[-1]
    freqs = base ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float64) / dh)
    angles = torch.arange(start, start + t, device=x.device, dtype=torch.float64)[:, None] * freqs
    cos, sin = angles.cos().to(x.dtype)[:, None], angles.sin().to(x.dtype)[:, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


@dataclass
class SessaCache:
    """Per layer: attention keys/values (after RoPE), feedback keys and mixer outputs so far."""

    k: torch.Tensor | None = None  # [B, L, Hkv, dh]
    v: torch.Tensor | None = None
    kb: torch.Tensor | None = None  # [B, L, D]
    s: torch.Tensor | None = None  # [B, L, D]
    delta: DeltaCache | None = None  # the gdn mixer's state

    @property
    def length(self) -> int:
        for t in (self.k, self.s):
            if t is not None:
                return t.shape[1]
        return 0


class SessaMixer(nn.Module):
    def __init__(self, d_model: int, *, n_heads: int = 1, n_kv_heads: int | None = None, feedback: bool = True,
                 gamma_max: float = 0.999, rope_base: float = 10000.0, solve: str = "auto"):
        """Args:
            d_model: width of the input and output.
            n_heads: attention heads of the forward branch.
            n_kv_heads: key/value heads (grouped-query attention); None: n_heads.
            feedback: add the feedback branch (off: plain causal attention).
            gamma_max: bound of the per-token feedback gain γ.
            rope_base: base of the rotary position frequencies.
            solve: feedback-solve path (auto | reference | dense | blocked | triton), see
                `sinkrec.ops.feedback_solve`; auto: dense up to T = 2048, then the blocked (Triton on CUDA).
        """
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"d_model {d_model}, n_heads {n_heads}, n_kv_heads {n_kv_heads} do not divide")
        self.d, self.h, self.hkv, self.dh = d_model, n_heads, n_kv_heads, d_model // n_heads
        self.q = nn.Linear(d_model, n_heads * self.dh)
        self.k = nn.Linear(d_model, n_kv_heads * self.dh)
        self.v = nn.Linear(d_model, n_kv_heads * self.dh)
        self.out = nn.Linear(d_model, d_model, bias=False) if n_heads > 1 else None
        self.feedback = feedback
        if feedback:
            self.fb = nn.Linear(d_model, 2 * d_model)
            self.w_gamma = nn.Linear(d_model, 1, bias=False)
            self.b_gamma = nn.Parameter(torch.tensor(1.0))
        self.gamma_max, self.rope_base, self.solve = gamma_max, rope_base, solve

    def gain(self, a: torch.Tensor) -> torch.Tensor:
        return self.gamma_max * torch.tanh(self.b_gamma + self.w_gamma(a).squeeze(-1))

    def forward(self, a: torch.Tensor, cache: SessaCache | None = None) -> torch.Tensor:
        b, t, _ = a.shape
        start = cache.length if cache is not None else 0
        q = rope(self.q(a).view(b, t, self.h, self.dh), start, self.rope_base)
        k = rope(self.k(a).view(b, t, self.hkv, self.dh), start, self.rope_base)
        v = self.v(a).view(b, t, self.hkv, self.dh)
        if cache is not None:
            k = k if cache.k is None else torch.cat([cache.k, k], 1)
            v = v if cache.v is None else torch.cat([cache.v, v], 1)
            cache.k, cache.v = k, v
        reps = self.h // self.hkv
        keys, values = (z.repeat_interleave(reps, dim=2).transpose(1, 2) for z in (k, v))
        total = keys.shape[2]
        mask = torch.ones(t, total, dtype=torch.bool, device=a.device).tril(total - t)
        f = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)
        f = f.transpose(1, 2).reshape(b, t, self.d)
        if self.out is not None:
            f = self.out(f)
        if not self.feedback:
            return f
        qb, kb = self.fb(a).chunk(2, -1)
        gamma = self.gain(a)
        if cache is None:
            return feedback_solve(f, qb, kb, gamma, self.d ** -0.5, self.solve)
        return self._feedback_step(f, qb, kb, gamma, cache)

    def _feedback_step(self, f, qb, kb, gamma, cache: SessaCache) -> torch.Tensor:
        """Incremental: s_t = f_t + γ_t Σ_{j<t} α_{t,j} s_j over cached (k^b, s), token by token."""
        outs = []
        for i in range(f.shape[1]):
            if cache.kb is None:
                s = f[:, i]
                cache.kb, cache.s = kb[:, i: i + 1], s[:, None]
            else:
                logits = (cache.kb.float() @ qb[:, i, :, None].float()).squeeze(-1) * self.d ** -0.5
                alpha = torch.softmax(logits, -1).to(f.dtype)
                s = f[:, i] + gamma[:, i, None] * (alpha[..., None] * cache.s).sum(1)
                cache.kb = torch.cat([cache.kb, kb[:, i: i + 1]], 1)
                cache.s = torch.cat([cache.s, s[:, None]], 1)
            outs.append(s)
        return torch.stack(outs, 1)


class SessaLayer(nn.Module):
    """One Sessa block; `mixer` ∈ {sessa, attention, gdn} swaps only the sequence mixer."""

    def __init__(self, d_model: int, *, n_heads: int = 1, n_kv_heads: int | None = None, mixer: str = "sessa",
                 gamma_max: float = 0.999, solve: str = "auto"):
        """Args:
            d_model: width of the input and output.
            n_heads: heads of the mixer.
            n_kv_heads: key/value heads of the attention branch; None: n_heads.
            mixer: sessa | attention (no feedback) | gdn (gated delta rule).
            gamma_max: bound of the feedback gain γ (sessa).
            solve: feedback-solve path (sessa).
        """
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=1e-5)
        self.inp = nn.Linear(d_model, 2 * d_model)
        if mixer in ("sessa", "attention"):
            self.mixer = SessaMixer(d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, feedback=mixer == "sessa",
                                    gamma_max=gamma_max, solve=solve)
        elif mixer == "gdn":
            self.mixer = GatedDeltaNet(d_model, n_heads=n_heads)
        else:
            raise ValueError(f"mixer must be 'sessa', 'attention' or 'gdn', got '{mixer}'")
        self.kind = mixer
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, cache: SessaCache | None = None) -> torch.Tensor:
        a, g = self.inp(self.norm(x)).chunk(2, -1)
        a = F.gelu(a)
        if self.kind == "gdn":
            if cache is not None and cache.delta is None:
                cache.delta = self.mixer.new_cache()
            s = self.mixer(a, cache=cache.delta if cache is not None else None)
        else:
            s = self.mixer(a, cache)
        return x + self.out(s * g)
