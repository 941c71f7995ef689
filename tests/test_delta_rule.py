"""Chunked and step paths of the gated delta rule against the step-by-step reference (float64)."""

import pytest
import torch

from sinkrec.ops.delta_rule import delta_rule, delta_rule_step


def inputs(b, t, h, dk, dv, seed=0, state=True, long_memory=False):
    """Random inputs in float64. `long_memory`: decays near 1 (log α ≈ −0.007) and small writes
    (β ≈ 0.12), so a state carries over several 64-step chunks; by default (log α ≈ −0.8, β ≈ 0.5) a
    chunk's start is forgotten by its end."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q, k, v = r(b, t, h, dk), r(b, t, h, dk), r(b, t, h, dv)
    k = k / k.norm(dim=-1, keepdim=True)  # the layer L2-normalises keys; keeps the recurrence contractive
    g = torch.nn.functional.logsigmoid(r(b, t, h) + 5) if long_memory else -torch.nn.functional.softplus(r(b, t, h))
    beta = torch.sigmoid(r(b, t, h) - (2 if long_memory else 0))
    h0 = r(b, h, dk, dv) if state else None
    return [x.requires_grad_() if x is not None else None for x in (q, k, v, g, beta, h0)]


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def compare(args, **kw):
    names = ["q", "k", "v", "g", "beta", "h0"]
    results = {}
    for impl in ("reference", "chunked"):
        q, k, v, g, beta, h0 = args
        o, hT = delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, impl=impl, **kw)
        gen = torch.Generator().manual_seed(99)
        loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() + \
            (hT * torch.randn(hT.shape, generator=gen, dtype=hT.dtype)).sum()
        grads = torch.autograd.grad(loss, [x for x in args if x is not None])
        results[impl] = (o, hT, grads)
    ref, fast = results["reference"], results["chunked"]
    assert rel(fast[0], ref[0]) < 1e-6, "output"
    assert rel(fast[1], ref[1]) < 1e-6, "final state"
    present = [n for n, x in zip(names, args) if x is not None]
    for name, gf, gr in zip(present, fast[2], ref[2]):
        assert rel(gf, gr) < 1e-6, f"grad {name}: {rel(gf, gr)}"


@pytest.mark.parametrize("t, chunk", [(64, 16), (50, 16), (7, 16), (130, 64)])
def test_chunked_equals_reference(t, chunk):
    compare(inputs(2, t, 3, 8, 5, seed=t), chunk_size=chunk)


def test_without_initial_state_and_custom_scale():
    compare(inputs(1, 37, 2, 6, 6, seed=3, state=False), chunk_size=8, scale=0.3)


def test_padding_mask_steps_neither_write_nor_decay():
    q, k, v, g, beta, h0 = inputs(2, 40, 2, 4, 4, seed=5)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    compare([q, k, v, g, beta, h0], chunk_size=16, mask=mask)
    o, hT = delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, mask=mask, impl="reference")
    o_short, h_short = delta_rule(q[1:, :25], k[1:, :25], v[1:, :25], g[1:, :25], beta[1:, :25],
                                  initial_state=h0[1:], output_final_state=True, impl="reference")
    assert torch.allclose(hT[1:], h_short) and torch.allclose(o[1:, :25], o_short)
    assert (o[1, 25:] == 0).all()


def test_packed_sequences_do_not_leak_state():
    cu = torch.tensor([0, 5, 38, 39, 59])
    q, k, v, g, beta, h0 = inputs(1, 59, 2, 4, 3, seed=7, state=False)
    h0 = torch.randn(4, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    compare([q, k, v, g, beta, h0], chunk_size=8, cu_seqlens=cu)
    o, hT = delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, cu_seqlens=cu, impl="chunked")
    for i in range(4):
        a, b = int(cu[i]), int(cu[i + 1])
        oi, hi = delta_rule(q[:, a:b], k[:, a:b], v[:, a:b], g[:, a:b], beta[:, a:b], initial_state=h0[i:i + 1],
                            output_final_state=True, impl="reference")
        assert rel(o[:, a:b], oi) < 1e-10 and rel(hT[i:i + 1], hi) < 1e-10


def test_step_applied_t_times_equals_reference():
    q, k, v, g, beta, h0 = inputs(2, 19, 3, 5, 4, seed=11)
    o_ref, h_ref = delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, impl="reference")
    state, scale = h0, 5 ** -0.5
    for t in range(19):
        out, state = delta_rule_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], state, scale)
        assert torch.allclose(out, o_ref[:, t], atol=1e-12)
    assert torch.allclose(state, h_ref, atol=1e-12)


def test_bad_shapes_are_reported():
    q, k, v, g, beta, _ = inputs(1, 4, 1, 2, 2)
    with pytest.raises(ValueError, match="shape mismatch"):
        delta_rule(q, k, v, g[:, :3], beta)
    with pytest.raises(ValueError, match="cu_seqlens"):
        delta_rule(q, k, v, g, beta, cu_seqlens=torch.tensor([0, 2, 3]))
