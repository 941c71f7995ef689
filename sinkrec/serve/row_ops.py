"""Batch-invariant pieces of the inline one-event steps (GDN: rows.py, SinkRec: fused_sinkrec.py).

A step over B users is written so that row b is bit for bit the step of user b alone, whatever B is:
events of concurrent requests can then share one step, and a state rebuilt from its log (one user per
step) still equals the incrementally served one exactly. Why each op is written as it is (CPU; checked
at engine start by `step_batcher.probe`, held by the tests):
- one torch thread per step (the server's default, `pin_threads`): with more, MKL may split a product's
  sum over threads differently for one row than for several (this CPU, 2 threads: 96 of 160 rows of
  the weight products tried and 32 of 1,344 delta-rule state reads differed), and the probe then turns
  sharing off;
- matmuls with a weight are `bmm` with the weight expanded over the rows (`linear`): one small product
  per row, the same kernel whatever B (`x @ W` is not: MKL picks gemv for one row and gemm for several,
  which add in another order);
- a batched matmul of per-row matrices is not always invariant, even on one thread: SinkRec's
  attention scores over its window (q·Kᵀ) had 448 of 768 rows differ, so `attend` writes its two
  products as elementwise products summed along a dim (0 differed); the delta rule's one-row products
  kᵀh and qᵀh (`DeltaRows.recur`) stay matmuls: invariant for every head dim from 8 to 256 tried
  (counts: `python benchmarks/batch_invariance.py`, benchmarks/results/batch_invariance.json);
- elementwise ops with a transcendental (silu, softplus, sigmoid, exp, tanh, log1p) run on rows
  padded to a multiple of 64 (`lanes`): PyTorch computes the vector-width body of a contiguous tensor
  with SIMD code and the tail with scalar code, which may round differently, and where the tail
  falls depends on B when the row length is not a multiple of the vector width;
- norms divide by `sqrt` (correctly rounded on every path) rather than `rsqrt`;
- reductions run along each row (mean, norm, softmax) or over a few taps or levels of each element.
Each step equals the model's `encode_step` up to summation order (the tests hold it to 1e-12 in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nn.gated_deltanet import DeltaCache

LANES = 64  # a multiple of every SIMD width PyTorch uses (AVX-512: 16 floats, 2 vectors a step)


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
    """RMSNorm `norm` over the last dim, dividing by a correctly rounded sqrt."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


class Dense:
    """Linear layers of one input as one product per row: `dense(x)` [B, Σe], `dense.split(x)` one part per layer."""

    def __init__(self, *layers):
        self.weight_t = torch.cat([lin.weight for lin in layers], 0).t()
        biases = [lin.bias for lin in layers]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else lin.weight.new_zeros(lin.weight.shape[0]) for b, lin in zip(biases, layers)])
        self.sizes = [lin.weight.shape[0] for lin in layers]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight_t, self.bias)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self(x).split(self.sizes, -1)


class SwiGLURows:
    """A SwiGLU feed-forward (nn/basic.py) on B rows."""

    def __init__(self, ffn):
        self.up, self.down = Dense(ffn.gate_up), Dense(ffn.down)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.up(h).chunk(2, -1)
        return self.down(lanes(F.silu, gate) * up)


def own(rows: int, r: int):
    """How row r of a step's tensors becomes a cache's: one user alone keeps views, rows get memory of their own."""
    return (lambda t: t) if rows == 1 else (lambda t: t[r:r + 1].clone())


class DeltaRows:
    """One GatedDeltaNet layer at one position for B users, its weights rearranged once.

    Everything projected from the layer input is one product (q, k, v, the decay input, β, the output
    gate, and any `extra` layers of the same input, e.g. TDGD's readout gate); the short convolutions
    of q, k, v are one weighted sum over their stacked K-wide window.
    """

    def __init__(self, gdn, extra: tuple = ()):
        self.heads, self.dk, self.dv = gdn.n_heads, gdn.head_dim, gdn.head_dim
        self.inner = self.heads * self.dk
        self.proj = Dense(gdn.q_proj, gdn.k_proj, gdn.v_proj, gdn.a_proj, gdn.b_proj, gdn.g_proj, *extra)
        convs = [gdn.convs[n] for n in ("q", "k", "v")]
        self.kernel = convs[0].kernel_size
        self.conv_weight = torch.cat([c.weight[:, 0].t() for c in convs], 1)[None]  # [1, K, 3·inner]
        self.conv_bias = torch.cat([c.bias for c in convs])
        self.neg_a, self.dt_bias = -gdn.A_log.exp(), gdn.dt_bias
        self.o_norm, self.out = gdn.o_norm, Dense(gdn.o_proj)

    def project(self, h: torch.Tensor, caches: list[DeltaCache]) -> tuple:
        """(q, k normalised [B, H, Dk], v, decay input [B, H], β logits, output gate, *extras); each
        cache's conv tails move on by one position."""
        rows, inner = h.shape[0], self.inner
        q_, k_, v_, *rest = self.proj.split(h)
        qkv = torch.cat([q_, k_, v_], -1)
        window = torch.cat([self._tails(caches, qkv), qkv[:, None]], 1)  # [B, K, 3·inner], oldest first
        kept = window[:, 1:]
        for r, cache in enumerate(caches):
            mine = own(rows, r)
            cache.conv = {"q": mine(kept[..., :inner]), "k": mine(kept[..., inner:2 * inner]),
                          "v": mine(kept[..., 2 * inner:])}
        mixed = lanes(F.silu, (window * self.conv_weight).sum(1) + self.conv_bias)
        q, k, v = mixed.view(rows, 3, self.heads, self.dk).unbind(1)
        return (F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, *rest)

    def decay(self, pre: torch.Tensor) -> torch.Tensor:
        """g = −exp(A_log)·softplus(pre + dt_bias) [B, H], the log decay."""
        return self.neg_a * lanes(F.softplus, pre + self.dt_bias)

    def recur(self, caches: list[DeltaCache], q, k, v, g, beta) -> torch.Tensor:
        """The delta rule's one-token update of each cache's state; o [B, H, Dv] (reference.py's step)."""
        state = self._states(caches, q.dtype) * lanes(torch.exp, g)[..., None, None]
        read = torch.matmul(k[..., None, :], state)[..., 0, :]  # kᵀ h
        state = state + k[..., :, None] * (beta[..., None] * (v - read))[..., None, :]
        for r, cache in enumerate(caches):
            cache.state = own(len(caches), r)(state)
        return torch.matmul((q * self.dk ** -0.5)[..., None, :], state)[..., 0, :]

    def output(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The layer's output [B, d]: normed o, gated, projected."""
        rows = o.shape[0]
        o = rms(o, self.o_norm) * lanes(F.silu, gate).view(rows, self.heads, self.dk)
        return self.out(o.reshape(rows, -1))

    def _tails(self, caches: list[DeltaCache], like: torch.Tensor) -> torch.Tensor:
        """The users' conv tails [B, K−1, 3·inner]; a user's first step has none (zeros)."""
        zero = like.new_zeros(1, self.kernel - 1, self.inner)
        tails = [[c.conv[n].to(like.dtype) if c.conv.get(n) is not None else zero for n in ("q", "k", "v")]
                 for c in caches]
        if len(tails) == 1:
            return torch.cat(tails[0], -1)
        return torch.cat([torch.cat([t[n] for t in tails], 0) for n in range(3)], -1)

    def _states(self, caches: list[DeltaCache], dtype) -> torch.Tensor:
        """The users' recurrent states [B, H, Dk, Dv]; zeros before a user's first step."""
        zero = torch.zeros(1, self.heads, self.dk, self.dv, dtype=dtype)
        states = [c.state if c.state is not None else zero for c in caches]
        return states[0] if len(states) == 1 else torch.cat(states, 0)
