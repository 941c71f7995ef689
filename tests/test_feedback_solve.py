"""The blocked feedback solve against the step-by-step reference (float64, CPU)."""

import pytest
import torch

from sinkrec.ops.feedback_solve import (
    IMPLS,
    feedback_solve,
    feedback_solve_blocked,
    feedback_solve_dense,
    feedback_solve_reference,
)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def inputs(b, t, d, dq, seed, gamma_max=0.999, sharp=2.0):
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(b, t, d, generator=gen, dtype=torch.float64)
    qb, kb = (sharp * torch.randn(b, t, dq, generator=gen, dtype=torch.float64) for _ in range(2))
    gamma = gamma_max * torch.tanh(3 * torch.randn(b, t, generator=gen, dtype=torch.float64))
    return [x.requires_grad_() for x in (f, qb, kb, gamma)]


@pytest.mark.parametrize("b, t, d, dq, block, seed", [
    (2, 37, 5, 8, 8, 0),     # ragged: 37 = 4·8 + 5
    (1, 100, 6, 4, 16, 1),
    (2, 64, 3, 8, 16, 2),    # a multiple of the block
    (2, 90, 4, 6, 32, 3),
    (1, 9, 7, 3, 256, 4),    # one leaf
])
def test_blocked_matches_reference_with_gradients(b, t, d, dq, block, seed):
    ins = inputs(b, t, d, dq, seed)
    w = torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    want = feedback_solve_reference(*ins)
    want_grads = torch.autograd.grad((want * w).sum(), ins)
    got = feedback_solve_blocked(*ins, block=block)
    got_grads = torch.autograd.grad((got * w).sum(), ins)
    assert rel(got, want) <= 1e-8
    for name, g, r in zip(("f", "qb", "kb", "gamma"), got_grads, want_grads):
        assert rel(g, r) <= 1e-8, name


def test_blocked_gradcheck():
    ins = inputs(1, 10, 2, 3, 5, gamma_max=0.9, sharp=1.0)
    assert torch.autograd.gradcheck(lambda *x: feedback_solve_blocked(*x, scale=0.7, block=4), ins)


def test_blocked_gamma_near_one_long_sequence():
    """γ = ±0.999 on many rows, T = 1000 (not a multiple of the block): agrees with the dense solve."""
    f, qb, kb, _ = inputs(1, 1000, 4, 8, 6)
    gamma = torch.full((1, 1000), 0.999, dtype=torch.float64)
    gamma[:, ::3] = -0.999
    want = feedback_solve_dense(f, qb, kb, gamma)
    got = feedback_solve_blocked(f, qb, kb, gamma, block=96)
    assert rel(got, want) <= 1e-8
    assert torch.isfinite(got).all()


def test_blocked_fp32_and_memory_linear_in_t():
    """Nothing T×T is kept for the backward: every saved tensor is at most B·T·max(block, D, Dq)."""
    b, t, d, dq, block = 1, 1024, 8, 8, 64
    f, qb, kb, gamma = (x.detach().float().requires_grad_() for x in inputs(b, t, d, dq, 7))
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: sizes.append(x.numel()) or x, lambda x: x):
        s = feedback_solve_blocked(f, qb, kb, gamma, block=block)
    assert max(sizes) <= b * t * block < t * t
    s.sum().backward()
    ref = feedback_solve_dense(*(x.detach().double() for x in (f, qb, kb, gamma)))
    assert rel(s.detach().double(), ref) <= 1e-5


def test_dispatcher():
    ins = inputs(1, 20, 3, 4, 8)
    want = feedback_solve_reference(*ins)
    for impl in ("auto", "reference", "dense", "blocked"):
        assert rel(feedback_solve(*ins, impl=impl), want) <= 1e-10
    assert "triton" in IMPLS
    with pytest.raises(ValueError, match="impl"):
        feedback_solve(*ins, impl="nope")
    with pytest.raises(ValueError, match="shape"):
        feedback_solve(ins[0], ins[1][:, :5], ins[2], ins[3])


def test_auto_switches_to_the_blocked_solve_past_the_dense_limit(monkeypatch):
    import sinkrec.ops.feedback_solve as fs

    calls = []
    monkeypatch.setattr(fs, "AUTO_DENSE_MAX_T", 10)
    monkeypatch.setattr(fs, "feedback_solve_blocked", lambda *a, **k: calls.append(a[0].shape[1]) or a[0])
    feedback_solve(*inputs(1, 10, 3, 4, 9))  # at the limit: dense
    assert calls == []
    feedback_solve(*inputs(1, 11, 3, 4, 9))  # past it, on the CPU: blocked
    assert calls == [11]
