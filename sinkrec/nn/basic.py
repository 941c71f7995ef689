"""Small shared layers: RMSNorm, SwiGLU feed-forward, causal depthwise short convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to fp32 for sensitive math; keep fp32/fp64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class RMSNorm(nn.Module):
    def __init__(self, dim: int, *, eps: float = 1e-6):
        """Args:
            dim: width of the normalised (last) dimension.
            eps: added to the mean square before the reciprocal square root.
        """
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = at_least_fp32(x)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight.to(x.dtype)).to(dtype)


class SwiGLU(nn.Module):
    """W_down (SiLU(W_gate x) ⊙ W_up x); hidden width ≈ ffn_mult·d·2/3 keeps parameters of a 4×MLP."""

    def __init__(self, d_model: int, *, ffn_mult: float = 4.0, dropout: float = 0.0):
        """Args:
            d_model: width of the input and output.
            ffn_mult: hidden width ≈ ffn_mult·d_model·2/3 (rounded to a multiple of 8).
            dropout: dropout on the hidden activations.
        """
        super().__init__()
        hidden = max(8, int(round(ffn_mult * d_model * 2 / 3 / 8)) * 8)
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.drop(F.silu(gate) * up))


class ShortConv(nn.Module):
    """Causal depthwise conv over time (width K) + SiLU; streaming keeps the last K−1 inputs."""

    def __init__(self, channels: int, *, kernel_size: int = 4):
        """Args:
            channels: channels, each convolved on its own (depthwise).
            kernel_size: K, the number of time steps each output sees (itself and K − 1 before).
        """
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C], past [B, K−1, C] (zeros at the start) → (y [B, T, C], new past)."""
        k = self.kernel_size
        if past is None:
            past = x.new_zeros(x.shape[0], k - 1, x.shape[2])
        full = torch.cat([past.to(x.dtype), x], dim=1)
        y = F.conv1d(full.transpose(1, 2), self.weight.to(x.dtype), self.bias.to(x.dtype), groups=x.shape[2])
        return F.silu(y.transpose(1, 2)), full[:, full.shape[1] - (k - 1):]
