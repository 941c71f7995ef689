"""The GDN one-event step in a batch-invariant form: row b of a step over B users is bit for bit the
step of user b alone, whatever B is, so events of concurrent requests can share one step and a state
rebuilt from its log (one user per step) still equals the incrementally served one exactly.

Why each op is written as it is (CPU, checked at engine start by `probe`, held by the tests):
- matmuls are `bmm` with the weight expanded over the rows: one small product per row, the same
  kernel whatever B (`x @ W` is not: MKL picks gemv for one row and gemm for several, which add in
  another order);
- elementwise ops with a transcendental (silu, softplus, sigmoid, exp) run on rows padded to a
  multiple of 64 (`lanes`): PyTorch computes the vector-width body of a contiguous tensor with SIMD
  code and the tail with scalar code, which may round differently, and where the tail falls depends
  on B when the row length is not a multiple of the vector width;
- norms divide by `sqrt` (correctly rounded on every path) rather than `rsqrt`;
- reductions are along the row (mean, norm) or over the few conv taps of each element.
It equals `encode_step` up to summation order (the tests hold it to 1e-12 in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nn.gated_deltanet import DeltaCache

LANES = 64  # a multiple of every SIMD width PyTorch uses (AVX-512: 16 floats, 2 vectors a step)


def supports(model) -> bool:
    """The plain GDN recommender in eval mode, float32 or float64 weights."""
    return (type(model).__name__ == "GDNRec" and not model.training
            and model.item_embedding.weight.dtype in (torch.float32, torch.float64))


def lanes(fn, x: torch.Tensor) -> torch.Tensor:
    """`fn` (elementwise) on x with every element on the SIMD path: rows padded to a multiple of LANES."""
    n = x.shape[-1]
    if n % LANES == 0:
        return fn(x)
    return fn(F.pad(x, (0, LANES - n % LANES)))[..., :n]


def linear(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, d] @ weight_t [d, e] (+ bias), one bmm: each row's product is computed alone."""
    out = torch.bmm(x.unsqueeze(1), weight_t.expand(x.shape[0], *weight_t.shape)).squeeze(1)
    return out if bias is None else out + bias


def rms(x: torch.Tensor, norm) -> torch.Tensor:
    """RMSNorm over the last dim, dividing by a correctly rounded sqrt."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


class _Layer:
    """One GDN block's weights, arranged once for row steps."""

    def __init__(self, block):
        gdn = block.mixer
        self.heads, self.dk, self.dv = gdn.n_heads, gdn.head_dim, gdn.head_dim
        self.inner = self.heads * self.dk
        layers = [gdn.q_proj, gdn.k_proj, gdn.v_proj, gdn.a_proj, gdn.b_proj, gdn.g_proj]
        self.w_in = torch.cat([lin.weight for lin in layers], 0).t()
        self.b_in = torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.weight.shape[0])
                               for lin in layers])
        self.sizes = [lin.weight.shape[0] for lin in layers]
        convs = [gdn.convs[n] for n in ("q", "k", "v")]
        self.kernel = convs[0].kernel_size
        self.conv_weight = torch.cat([c.weight[:, 0].t() for c in convs], 1)[None]  # [1, K, 3·inner]
        self.conv_bias = torch.cat([c.bias for c in convs])
        self.neg_a = -gdn.A_log.exp()
        self.dt_bias = gdn.dt_bias
        self.norm1, self.norm2, self.o_norm = block.norm1, block.norm2, gdn.o_norm
        self.w_out = gdn.o_proj.weight.t()
        self.w_up, self.w_down = block.ffn.gate_up.weight.t(), block.ffn.down.weight.t()


class RowsStep:
    """`rows(caches, items)`: one event for each of B GDNRec users (their caches updated in place),
    hidden outputs [B, d]; `step(cache, item, when)`: the same for one user, hidden [1, 1, d]."""

    def __init__(self, model):
        self.model = model
        with torch.inference_mode():
            self.layers = [_Layer(block) for block in model.blocks]

    def __call__(self, cache: list, item: int, when: float | None = None) -> torch.Tensor:
        return self.rows([cache], [item])[:, None]

    @torch.inference_mode()
    def rows(self, caches: list[list], items: list[int]) -> torch.Tensor:
        model = self.model
        x = model.item_embedding.weight[torch.tensor(items)] * model.d_model ** 0.5  # [B, d]
        for n, layer in enumerate(self.layers):
            x = self._layer(layer, [c[n] for c in caches], x)
        return rms(x, model.norm)

    def _layer(self, layer: _Layer, caches: list[DeltaCache], x: torch.Tensor) -> torch.Tensor:
        rows, inner = x.shape[0], layer.inner
        q_, k_, v_, pre, b, gate = linear(rms(x, layer.norm1), layer.w_in, layer.b_in).split(layer.sizes, -1)
        qkv = torch.cat([q_, k_, v_], -1)
        window = torch.cat([self._tails(caches, layer, qkv), qkv[:, None]], 1)  # [B, K, 3·inner], oldest first
        mixed = lanes(F.silu, (window * layer.conv_weight).sum(1) + layer.conv_bias)
        q, k, v = mixed.view(rows, 3, layer.heads, layer.dk).unbind(1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        g = layer.neg_a * lanes(F.softplus, pre + layer.dt_bias)  # [B, H], log decay
        beta = lanes(torch.sigmoid, b)
        state = self._states(caches, layer, qkv.dtype) * lanes(torch.exp, g)[..., None, None]
        read = torch.matmul(k[..., None, :], state)[..., 0, :]  # kᵀ h
        state = state + k[..., :, None] * (beta[..., None] * (v - read))[..., None, :]
        o = torch.matmul((q * layer.dk ** -0.5)[..., None, :], state)[..., 0, :]
        kept = window[:, 1:]
        for r, cache in enumerate(caches):  # one user alone keeps views; rows get memory of their own
            own = (lambda t: t) if rows == 1 else (lambda t, r=r: t[r:r + 1].clone())
            cache.conv = {"q": own(kept[..., :inner]), "k": own(kept[..., inner:2 * inner]),
                          "v": own(kept[..., 2 * inner:])}
            cache.state = own(state)
        o = rms(o, layer.o_norm) * lanes(F.silu, gate).view(rows, layer.heads, layer.dk)
        x = x + linear(o.reshape(rows, -1), layer.w_out)
        up_gate, up = linear(rms(x, layer.norm2), layer.w_up).chunk(2, -1)
        return x + linear(lanes(F.silu, up_gate) * up, layer.w_down)

    @staticmethod
    def _tails(caches: list[DeltaCache], layer: _Layer, like: torch.Tensor) -> torch.Tensor:
        """The users' conv tails [B, K−1, 3·inner]; a user's first step has none (zeros)."""
        zero = like.new_zeros(1, layer.kernel - 1, layer.inner)
        tails = [[c.conv[n].to(like.dtype) if c.conv.get(n) is not None else zero for n in ("q", "k", "v")]
                 for c in caches]
        if len(tails) == 1:
            return torch.cat(tails[0], -1)
        return torch.cat([torch.cat([t[n] for t in tails], 0) for n in range(3)], -1)

    @staticmethod
    def _states(caches: list[DeltaCache], layer: _Layer, dtype) -> torch.Tensor:
        """The users' recurrent states [B, H, Dk, Dv]; zeros before a user's first step."""
        zero = torch.zeros(1, layer.heads, layer.dk, layer.dv, dtype=dtype)
        states = [c.state if c.state is not None else zero for c in caches]
        return states[0] if len(states) == 1 else torch.cat(states, 0)
