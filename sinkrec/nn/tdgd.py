"""TDGD: Temporal-aware State-relation Differential Gated DeltaNet (spec/sinkrec.md §3.4).

Changes only the per-step inputs of the gated delta rule, never using the recurrent state, so the
chunked kernels stay exact:
1. decay  log α = −exp(A_log)·softplus(W_a h + w_δ δ + b_dt)           (temporal term w_δ δ)
2. memory coverage  c = tanh(a_c)·σ(κ·cos(k, k̂^m) + b_c)·r_t        (a_c = 0 at init: c starts at 0;
   r_t = 1 where the position's memory pattern recurs, 0 at null codes)
3. write suppression  β' = β(1 − c);  decay suppression  log α' = (1 − c) log α
4. differential readout  q' = q − λ k̂^m,  λ = λ_max tanh(w_λᵀ h)   (w_λ = 0 at init: λ starts at 0)
So at initialisation every memory path is an exact no-op: TDGD computes what plain GDN computes.
The spec's forms, c = σ(κ·cos + b_c) and λ = λ_max σ(w_λᵀ h), are options (`coverage_gain: false`,
`readout_form: sigmoid`); they do not start as a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..checks import Checked, at_least, finite, one_of, option
from .gated_deltanet import DeltaCache, DeltaInputs, GatedDeltaNet
from .memory import memory_head_keys, own_rng


@dataclass
class TDGDOptions(Checked):
    """TDGD's switches, declared once: SinkRec's options inherit them (flat keys in the config)."""

    temporal: bool = True  # time-gap term w_δ·δ in the decay
    write_suppression: bool = True  # β' = β(1 − c): write less where the memory already covers the key
    decay_suppression: bool = True  # log α' = (1 − c) log α: forget less where the memory covers the key
    diff_readout: bool = True  # differential readout q' = q − λ k̂^m
    lambda_max: float = option(0.5, at_least(0))  # λ_max of the differential readout
    coverage_scale: float = option(5.0, finite())  # κ initial value (learned)
    coverage_bias: float = option(-3.0, finite())  # b_c initial value (learned)
    coverage_gain: bool = True  # learned amplitude tanh(a_c) on the coverage, 0 at init (false: c = σ(κ·cos + b_c))
    readout_form: str = option("tanh", one_of("tanh", "sigmoid"))  # λ_max·tanh(w_λᵀh), 0 at init | sigmoid: λ_max·σ(…)


class TDGD(nn.Module):
    def __init__(self, d_model: int, *, n_heads: int, head_dim: int | None = None, conv_size: int = 4,
                 impl: str = "auto", options: TDGDOptions, use_memory: bool):
        """Args:
            d_model: width of the input and output.
            n_heads: recurrent heads.
            head_dim: key/value width per head; None: d_model // n_heads.
            conv_size: width of the causal short convolution on q, k, v.
            impl: delta-rule path: auto | chunked | reference | triton.
            options: the TDGD switches (any object with TDGDOptions' fields).
            use_memory: whether a conditional memory feeds this layer (coverage and readout need it).
        """
        super().__init__()
        self.gdn = GatedDeltaNet(d_model, n_heads=n_heads, head_dim=head_dim, conv_size=conv_size, impl=impl)
        self.options = options
        h, dk = n_heads, self.gdn.head_dim
        self.time_weight = nn.Parameter(torch.zeros(h)) if options.temporal else None
        needs_memory = use_memory and (options.write_suppression or options.diff_readout)
        with own_rng():  # the memory's parameters leave the shared ones' initial values unchanged
            self.memory_key = nn.Linear(d_model, h * dk, bias=False) if needs_memory else None
            if needs_memory and options.write_suppression:
                self.kappa = nn.Parameter(torch.full((h,), options.coverage_scale))
                self.coverage_bias = nn.Parameter(torch.full((h,), options.coverage_bias))
                # a_c: coverage amplitude tanh(a_c), 0 at init
                self.coverage_gain = nn.Parameter(torch.zeros(h)) if options.coverage_gain else None
            if needs_memory and options.diff_readout:
                self.readout_gate = nn.Linear(d_model, h, bias=False)
                nn.init.zeros_(self.readout_gate.weight)  # tanh form: λ = λ_max tanh(0) = 0 at init

    def coverage(self, k: torch.Tensor, memory_keys: torch.Tensor, dtype: torch.dtype,
                 recurs: torch.Tensor | None = None) -> torch.Tensor:
        """c = tanh(a_c)·σ(κ·cos(k, k̂^m) + b_c)·r [B, T, H] (no tanh(a_c) without `coverage_gain`): how much
        of this write the memory already holds."""
        cos = (k * memory_keys).sum(-1).to(dtype)
        c = torch.sigmoid(self.kappa * cos + self.coverage_bias)
        if self.coverage_gain is not None:
            c = torch.tanh(self.coverage_gain.to(dtype)) * c
        return c if recurs is None else c * recurs[..., None].to(dtype)

    def readout_lambda(self, x: torch.Tensor) -> torch.Tensor:
        """λ [B, T, H] of the differential readout: λ_max·tanh(w_λᵀh), or λ_max·σ(w_λᵀh) (`readout_form`)."""
        z = self.readout_gate(x)
        return self.options.lambda_max * (torch.sigmoid(z) if self.options.readout_form == "sigmoid" else torch.tanh(z))

    def prepare(self, memory: torch.Tensor) -> torch.Tensor | None:
        """Per-head memory keys k̂^m [B, T, H, Dk]: memory-only, so a looped block computes them once."""
        return memory_head_keys(self.memory_key, memory, self.gdn.n_heads) if self.memory_key is not None else None

    def forward(self, x: torch.Tensor, delta: torch.Tensor, memory: torch.Tensor | None,
                mask: torch.Tensor | None = None, cache: DeltaCache | None = None,
                recurs: torch.Tensor | None = None, memory_keys: torch.Tensor | None = None) -> torch.Tensor:
        """`recurs` [B, T] gates coverage (1: the pattern recurs); `memory_keys` from `prepare` (else computed)."""
        opts = self.options

        def modify(inputs: DeltaInputs, x: torch.Tensor) -> DeltaInputs:
            changes = {}
            g = inputs.g
            if self.time_weight is not None:
                pre = inputs.decay_input.to(g.dtype) + self.time_weight.to(g.dtype) * delta[..., None].to(g.dtype)
                g = self.gdn.decay(pre)
            if self.memory_key is not None:
                km = memory_keys if memory_keys is not None else self.prepare(memory)  # [B, T, H, Dk]
                if opts.write_suppression:
                    coverage = self.coverage(inputs.k, km, g.dtype, recurs)
                    changes["beta"] = inputs.beta * (1 - coverage)
                    if opts.decay_suppression:
                        g = g * (1 - coverage)
                if opts.diff_readout:
                    lam = self.readout_lambda(x)
                    changes["q"] = inputs.q - lam[..., None].to(inputs.q.dtype) * km.to(inputs.q.dtype)
            changes["g"] = g
            return inputs.replace(**changes)

        return self.gdn(x, mask, cache, modify)
