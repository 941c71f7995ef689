"""Cheaper single-event steps: the same math as `encode_step` on one item, inline (GDN here, SinkRec in
fused_sinkrec.py); `stepper(model)` picks the one for a model.

`encode_step` goes through the layers' modules, the convolution and the delta-rule dispatcher,
written for whole sequences; at one event per call their overhead is most of the cost. This step
calls the layers' weights directly: the short convolution over its K-wide window is a weighted sum,
the delta rule is its one-token update. It equals `encode_step` up to summation order (the tests
hold it to 1e-12 in float64). The engine uses it for every step of a GDN user, in a live update and
in a replay alike, so a rebuilt state is still bit-for-bit the incremental one. The same holds for SinkRec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def stepper(model):
    """`step(cache, item, when) -> hidden [1, 1, d]` for this model, or None when it has no inline step."""
    from .fused_sinkrec import SinkRecStep
    from .fused_sinkrec import supports as sinkrec_supports

    if supports(model):
        return lambda cache, item, when: gdn_step(model, cache, item)
    if sinkrec_supports(model):
        return SinkRecStep(model)  # its weight-only parts are computed here, once
    return None


def supports(model) -> bool:
    """Only the plain GDN recommender in eval mode, float32 or float64 weights."""
    return (type(model).__name__ == "GDNRec" and not model.training
            and model.item_embedding.weight.dtype in (torch.float32, torch.float64))


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


@torch.inference_mode()
def gdn_step(model, cache: list, item: int) -> torch.Tensor:
    """One event for one user: updates `cache` (a GDNRec cache) in place, returns hidden [1, 1, d]."""
    x = model.item_embedding.weight[item][None] * model.d_model ** 0.5  # [1, d]
    for block, c in zip(model.blocks, cache):
        m = block.mixer
        heads, dim = m.n_heads, m.head_dim
        h = _rms(x, block.norm1)
        parts = {}
        for name, proj in (("q", m.q_proj), ("k", m.k_proj), ("v", m.v_proj)):
            y = F.linear(h, proj.weight)
            conv, past = m.convs[name], c.conv.get(name)
            if past is None:
                past = y.new_zeros(1, conv.kernel_size - 1, y.shape[-1])
            window = torch.cat([past.to(y.dtype), y[:, None]], 1)  # [1, K, C], oldest first
            c.conv[name] = window[:, 1:]
            out = (window * conv.weight[:, 0].t()[None]).sum(1) + conv.bias
            parts[name] = F.silu(out).view(1, heads, dim)
        g = -m.A_log.exp() * F.softplus(F.linear(h, m.a_proj.weight) + m.dt_bias)  # [1, H]
        beta = torch.sigmoid(F.linear(h, m.b_proj.weight, m.b_proj.bias))
        q, k, v = F.normalize(parts["q"], dim=-1), F.normalize(parts["k"], dim=-1), parts["v"]
        state = c.state if c.state is not None else q.new_zeros(1, heads, dim, v.shape[-1])
        state = state * g.exp()[..., None, None]
        read = torch.einsum("bhk,bhkv->bhv", k, state)
        state = state + torch.einsum("bhk,bhv->bhkv", k, beta[..., None] * (v - read))
        c.state = state
        o = torch.einsum("bhk,bhkv->bhv", q * dim ** -0.5, state)
        o = _rms(o, m.o_norm) * F.silu(F.linear(h, m.g_proj.weight).view(1, heads, dim))
        x = x + F.linear(o.reshape(1, -1), m.o_proj.weight)
        gate, up = F.linear(_rms(x, block.norm2), block.ffn.gate_up.weight).chunk(2, -1)
        x = x + F.linear(F.silu(gate) * up, block.ffn.down.weight)
    return _rms(x, model.norm)[:, None]
