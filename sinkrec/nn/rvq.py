"""Residual vector quantization with a straight-through estimator (spec/sinkrec.md §3.2).

Level l quantizes the residual left by levels < l: c^l = argmin_k ||r^{l−1} − C^l_k||, r^l = r^{l−1} − C^l_c.
Codebooks learn by EMA with dead-code restart (default) or by gradient with codebook + commitment
losses. The first training batch initialises each level by k-means on its residuals. Code usage
is counted so per-level perplexity (collapse shows as a small value) can be logged every epoch.
The EMA decay warms up from `decay` to `decay_final` over `decay_warmup` steps, so codebooks settle
instead of drifting for the whole run. Each code's share of the positions (times K, an EMA) says
whether it recurs: `recurring(ratio)` is the code set whose share is at least ratio/K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .basic import at_least_fp32


@dataclass
class RVQOutput:
    quantized: torch.Tensor  # [N, d]: straight-through (forward value Σ_l C^l_c, gradient to the input)
    codes: torch.Tensor  # [N, L] long
    loss: torch.Tensor  # commitment (+ codebook in gradient mode)


def _nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    distances = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(-1)[None])
    return distances.argmin(-1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain Lloyd's k-means; empty clusters are re-seeded from random points."""
    n = x.shape[0]
    idx = torch.randint(0, n, (k,), generator=generator, device="cpu").to(x.device)
    centers = x[idx].clone()
    for _ in range(iters):
        assign = _nearest(x, centers)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            refill = torch.randint(0, n, (int(empty.sum()),), generator=generator, device="cpu").to(x.device)
            centers[empty] = x[refill]
    return centers


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, *, levels: int = 3, codes: int = 256, mode: str = "ema", decay: float = 0.99,
                 decay_final: float | None = None, decay_warmup: int = 0, commitment: float = 0.25,
                 dead_threshold: float = 0.05, kmeans_init: bool = True, kmeans_iters: int = 10,
                 share_decay: float = 0.99):
        """Args:
            dim: width of the vectors to quantize.
            levels: residual levels.
            codes: codes per level.
            mode: ema (codebooks follow an EMA, dead codes restart) | grad (codebook + commitment losses).
            decay: EMA decay at the start (ema mode).
            decay_final: EMA decay after the warm-up (None: `decay` throughout).
            decay_warmup: training steps over which the decay moves linearly from `decay` to `decay_final`.
            commitment: weight of the commitment loss.
            dead_threshold: EMA count below which a code is restarted (ema mode).
            kmeans_init: initialise each level by k-means on the first training batch.
            kmeans_iters: Lloyd iterations of that initialisation.
            share_decay: EMA decay of each code's usage share (what `recurring` reads).
        """
        super().__init__()
        if mode not in ("ema", "grad"):
            raise ValueError(f"rvq mode must be 'ema' or 'grad', got '{mode}'")
        self.levels, self.codes, self.dim, self.mode = levels, codes, dim, mode
        self.decay, self.commitment, self.dead_threshold = decay, commitment, dead_threshold
        self.kmeans_iters = kmeans_iters
        self.decay_final = decay if decay_final is None else decay_final
        self.decay_warmup, self.share_decay = decay_warmup, share_decay
        init = torch.randn(levels, codes, dim) * dim ** -0.5
        if mode == "grad":
            self.codebooks = nn.Parameter(init)
        else:
            self.register_buffer("codebooks", init)
            self.register_buffer("ema_size", torch.ones(levels, codes))
            self.register_buffer("ema_sum", init.clone())
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        self.register_buffer("usage", torch.zeros(levels, codes))  # counts since the last `usage_stats()`
        self.register_buffer("restarts", torch.zeros(levels, dtype=torch.long), persistent=False)
        self.register_buffer("share", torch.ones(levels, codes))  # EMA of each code's share of positions × K
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps (EMA decay warm-up)
        self._init_known = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, d] → codes [N, L] (no side effects)."""
        residual, codes = x, []
        for level in range(self.levels):
            c = _nearest(residual, self.codebooks[level].to(residual.dtype))
            codes.append(c)
            residual = residual - self.codebooks[level].to(residual.dtype)[c]
        return torch.stack(codes, -1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., L] → Σ_l C^l[c^l]."""
        return sum(self.codebooks[level][codes[..., level]] for level in range(self.levels))

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> RVQOutput:
        """x [N, d]; `weight` [N] (1 = real position, 0 = padding) masks losses and codebook updates.

        No host-device synchronisation in training steps: padding is weighted out rather than
        gathered away, and dead codes are replaced with `torch.where` rather than by branching.
        """
        x32 = at_least_fp32(x)
        w = x32.new_ones(x32.shape[0]) if weight is None else weight.to(x32.dtype)
        if self.training and not self._initialised():
            self._kmeans_init(x32.detach().float()[w > 0])
        residual = x32
        codes, quantized = [], torch.zeros_like(x32)
        codebook_loss = x32.new_zeros(())
        denom = w.sum().clamp_min(1.0) * self.dim
        for level in range(self.levels):
            book = self.codebooks[level].to(x32.dtype)
            c = _nearest(residual.detach(), book.detach())
            chosen = book[c]
            if self.mode == "grad":
                codebook_loss = codebook_loss + ((chosen - residual.detach()).pow(2).sum(-1) * w).sum() / denom
            if self.training:
                counts = torch.zeros_like(self.usage[level]).index_add_(0, c, w.to(self.usage.dtype))
                self.usage[level] += counts
                self.share[level].lerp_(counts * (self.codes / counts.sum().clamp_min(1.0)), 1 - self.share_decay)
                if self.mode == "ema":
                    self._ema_update(level, residual.detach(), c, w, counts)
            codes.append(c)
            quantized = quantized + chosen
            residual = residual - chosen.detach()
        if self.training:
            self.steps += 1
        commit = ((x32 - quantized.detach()).pow(2).sum(-1) * w).sum() / denom
        straight = x32 + (quantized - x32).detach() if self.mode == "ema" else \
            x32 + (quantized - x32).detach() + (quantized - quantized.detach())
        loss = self.commitment * commit + codebook_loss
        return RVQOutput(quantized=straight.to(x.dtype), codes=torch.stack(codes, -1), loss=loss)

    def _initialised(self) -> bool:
        """Reads the buffer once (it may come from a checkpoint), then trusts a Python flag."""
        if not self._init_known:
            self._init_known = bool(self.initialised)
        return self._init_known

    @torch.no_grad()
    def _kmeans_init(self, x: torch.Tensor) -> None:
        residual = x
        for level in range(self.levels):
            centers = kmeans(residual, self.codes, self.kmeans_iters)
            self.codebooks.data[level] = centers.to(self.codebooks.dtype)
            if self.mode == "ema":
                self.ema_sum[level] = centers
                self.ema_size[level] = 1.0
            residual = residual - centers[_nearest(residual, centers)]
        self.initialised.fill_(True)
        self._init_known = True

    def current_decay(self) -> torch.Tensor:
        """The EMA decay of this step (a tensor: no host sync), warming up from `decay` to `decay_final`."""
        frac = (self.steps.float() / max(self.decay_warmup, 1)).clamp(max=1.0)
        return self.decay + (self.decay_final - self.decay) * frac

    def recurring(self, ratio: float) -> torch.Tensor:
        """[L, K] bool: codes whose EMA share of positions is at least ratio/K (all when ratio ≤ 0)."""
        return self.share >= ratio

    @torch.no_grad()
    def _ema_update(self, level: int, residual: torch.Tensor, codes: torch.Tensor, weight: torch.Tensor,
                    counts: torch.Tensor) -> None:
        residual, weight = residual.to(self.ema_sum.dtype), weight.to(self.ema_sum.dtype)
        counts = counts.to(self.ema_size.dtype)
        sums = torch.zeros_like(self.ema_sum[level]).index_add_(0, codes, residual * weight[:, None])
        keep = 1 - self.current_decay().to(self.ema_size.dtype)
        self.ema_size[level].lerp_(counts, keep)
        self.ema_sum[level].lerp_(sums, keep)
        n = self.ema_size[level].sum()
        smoothed = (self.ema_size[level] + 1e-5) / (n + self.codes * 1e-5) * n  # Laplace smoothing
        self.codebooks[level] = self.ema_sum[level] / smoothed[:, None]
        # dead-code restart: codes whose EMA count per batch fell below the threshold take random
        # real residuals of this batch
        dead = self.ema_size[level] < self.dead_threshold
        picks = torch.multinomial(weight + 1e-12, self.codes, replacement=True)
        fresh = residual[picks]
        self.codebooks[level] = torch.where(dead[:, None], fresh.to(self.codebooks.dtype), self.codebooks[level])
        self.ema_sum[level] = torch.where(dead[:, None], fresh, self.ema_sum[level])
        self.ema_size[level] = torch.where(dead, torch.ones_like(self.ema_size[level]), self.ema_size[level])
        self.restarts[level] += dead.sum()

    def usage_stats(self, reset: bool = True, recur_share: float = 1.0) -> dict[str, float]:
        """Per level since the last call: perplexity of code usage, fraction of codes used, restarts,
        fraction of codes that recur; `rvq_covered`: share of positions whose level-0 code recurs."""
        stats = {}
        recurring = self.recurring(recur_share)
        for level in range(self.levels):
            counts = self.usage[level]
            total = counts.sum()
            if total > 0:
                p = counts / total
                entropy = -(p[p > 0] * p[p > 0].log()).sum()
                stats[f"rvq{level}_perplexity"] = round(float(entropy.exp()), 2)
                stats[f"rvq{level}_used"] = round(float((counts > 0).float().mean()), 4)
            stats[f"rvq{level}_restarts"] = int(self.restarts[level])
            stats[f"rvq{level}_recurring"] = round(float(recurring[level].float().mean()), 4)
        total = self.usage[0].sum()
        if total > 0:
            stats["rvq_covered"] = round(float((self.usage[0] * recurring[0]).sum() / total), 4)
        stats["rvq_decay"] = round(float(self.current_decay()), 5)
        if reset:
            self.usage.zero_()
            self.restarts.zero_()
        return stats
