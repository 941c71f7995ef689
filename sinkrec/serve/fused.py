"""Pieces of the inline single-event step of SinkRec (fused_sinkrec.py): its GatedDeltaNet layers at one
position. (GDN's own step is rows.py, written batch-invariant; `steppers.stepper(model)` picks one.)

`encode_step` goes through the layers' modules, the convolution and the delta-rule dispatcher,
written for whole sequences; at one event per call their overhead is most of the cost. This step
calls the layers' weights directly: the projections of one input are one matmul, the short
convolution over its K-wide window is a weighted sum, the delta rule is its one-token update. It
equals `encode_step` up to summation order (the tests hold it to 1e-12 in float64). The engine uses
it for every step of a SinkRec user, in a live update and in a replay alike, so a rebuilt
state is still bit-for-bit the incremental one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms(x: torch.Tensor, norm) -> torch.Tensor:
    """RMSNorm `norm` applied to x (float32/float64: no casts)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


def merge_linear(layers: list) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Linear layers of one input as (weight, bias, output sizes): one matmul instead of one per layer."""
    weight = torch.cat([lin.weight for lin in layers], 0)
    bias = torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.weight.shape[0])
                      for lin in layers])
    return weight, bias, [lin.weight.shape[0] for lin in layers]


class DeltaStep:
    """One GatedDeltaNet layer at one position, its weights rearranged once.

    Everything projected from the layer input h is one matmul (q, k, v, the decay input a, β, the
    output gate, and any `extra` layers of the same input, e.g. TDGD's readout gate); the short
    convolutions of q, k, v are one weighted sum over their stacked K-wide window.
    """

    def __init__(self, gdn, extra: tuple = ()):
        self.gdn = gdn
        self.heads, self.dk = gdn.n_heads, gdn.head_dim
        self.inner = self.heads * self.dk
        self.weight, self.bias, self.sizes = merge_linear(
            [gdn.q_proj, gdn.k_proj, gdn.v_proj, gdn.a_proj, gdn.b_proj, gdn.g_proj, *extra])
        convs = [gdn.convs[n] for n in ("q", "k", "v")]
        self.kernel = convs[0].kernel_size
        self.conv_weight = torch.cat([c.weight[:, 0].t() for c in convs], 1)[None]  # [1, K, 3·inner]
        self.conv_bias = torch.cat([c.bias for c in convs])

    def project(self, h: torch.Tensor, cache) -> tuple:
        """(q, k normalised [1, H, Dk], v, decay input [1, H], β logits, output gate, *extras); the conv
        tails of `cache` move on by one position."""
        parts = F.linear(h, self.weight, self.bias).split(self.sizes, -1)
        qkv, inner = torch.cat(parts[:3], -1), self.inner
        past = [cache.conv.get(n) for n in ("q", "k", "v")]
        tail = (torch.cat([p.to(qkv.dtype) for p in past], -1) if past[0] is not None
                else qkv.new_zeros(1, self.kernel - 1, 3 * inner))
        window = torch.cat([tail, qkv[:, None]], 1)  # [1, K, 3·inner], oldest first
        kept = window[:, 1:]
        cache.conv = {"q": kept[..., :inner], "k": kept[..., inner:2 * inner], "v": kept[..., 2 * inner:]}
        q, k, v = F.silu((window * self.conv_weight).sum(1) + self.conv_bias).view(1, 3, self.heads, self.dk).unbind(1)
        return (F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, *parts[3:])

    def decay(self, pre: torch.Tensor) -> torch.Tensor:
        """g = −exp(A_log)·softplus(pre + dt_bias) [1, H]."""
        return -self.gdn.A_log.exp() * F.softplus(pre + self.gdn.dt_bias)

    def recur(self, cache, q, k, v, g, beta) -> torch.Tensor:
        """The delta rule's one-token update of `cache.state`; returns o [1, H, Dv] (reference.py's step)."""
        state = cache.state if cache.state is not None else q.new_zeros(1, self.heads, self.dk, v.shape[-1])
        state = state * g.exp()[..., None, None]
        read = torch.matmul(k[..., None, :], state)[..., 0, :]  # kᵀ h
        state = state + k[..., :, None] * (beta[..., None] * (v - read))[..., None, :]
        cache.state = state
        return torch.matmul((q * self.dk ** -0.5)[..., None, :], state)[..., 0, :]

    def output(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        o = rms(o, self.gdn.o_norm) * F.silu(gate.view(1, self.heads, self.dk))
        return F.linear(o.reshape(1, -1), self.gdn.o_proj.weight)
