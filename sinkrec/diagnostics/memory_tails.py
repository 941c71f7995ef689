"""Memory tails of a decoder (spec/sessa.md): how strongly the last output depends on each lag.

influence[ℓ] = mean over random probes u of ||∂⟨u, y_T⟩ / ∂x_{T−ℓ}||, with y the final-norm output
before the head. Sessa's claim is a power-law tail: a straight line on log-log axes, whose slope
`tail_slope` measures.
"""

from __future__ import annotations

import numpy as np
import torch

from ..lm.model import SessaLM


def influence(model: SessaLM, tokens: torch.Tensor, probes: int = 8) -> np.ndarray:
    """Mean over probes of ||∂⟨u, y_T⟩/∂x_τ|| for every τ, indexed by lag T − τ."""
    x = model.embed(tokens).detach().requires_grad_()
    h = x
    for layer in model.layers:
        h = layer(h)
    y = model.norm(h)[:, -1]
    norms = []
    gen = torch.Generator(device=tokens.device).manual_seed(0)
    for _ in range(probes):
        u = torch.randn(y.shape, generator=gen, device=y.device)
        (grad,) = torch.autograd.grad((y * u).sum(), x, retain_graph=True)
        norms.append(grad.norm(dim=-1).mean(0))
    return torch.stack(norms).mean(0).detach().cpu().double().numpy()[::-1].copy()


def tail_slope(curve: np.ndarray) -> float:
    """Log-log slope of an influence curve over lags 8 … T/2 (where it is positive)."""
    lags = np.arange(len(curve))
    window = (lags >= 8) & (lags <= len(curve) // 2) & (curve > 0)
    return float(np.polyfit(np.log(lags[window]), np.log(curve[window]), 1)[0])
