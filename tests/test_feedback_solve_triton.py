"""The Triton feedback solve: on the CPU interpreter (a subprocess with TRITON_INTERPRET=1) and on a GPU."""

import os
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton")

CHECK = """
import torch
from sinkrec.ops.feedback_solve import feedback_solve_reference
from sinkrec.ops.feedback_solve.triton_kernels import feedback_solve_triton
gen = torch.Generator().manual_seed(0)
def rel(a, b): return ((a - b).norm() / b.norm()).item()
for b, t, d, dq in [(2, 100, 24, 20), (1, 150, 16, 16)]:  # ragged: not multiples of the 64-row leaf
    ins = [torch.randn(b, t, d, generator=gen), 2 * torch.randn(b, t, dq, generator=gen),
           2 * torch.randn(b, t, dq, generator=gen), 0.999 * torch.tanh(3 * torch.randn(b, t, generator=gen))]
    w = torch.randn(b, t, d, generator=gen)
    ref_in = [x.double().requires_grad_() for x in ins]
    want = feedback_solve_reference(*ref_in)
    want_g = torch.autograd.grad((want * w.double()).sum(), ref_in)
    got_in = [x.clone().requires_grad_() for x in ins]
    got = feedback_solve_triton(*got_in, block=64)
    got_g = torch.autograd.grad((got * w).sum(), got_in)
    errs = [rel(got.double(), want)] + [rel(g.double(), r) for g, r in zip(got_g, want_g)]
    assert max(errs) <= 1e-4, errs
    print("ok", t, max(errs))
"""


def test_triton_interpreter_matches_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok") == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("t", [1000, 1337])
def test_triton_gpu_matches_dense_float64(dtype, tol, t):
    from sinkrec.ops.feedback_solve import feedback_solve_dense
    from sinkrec.ops.feedback_solve.triton_kernels import feedback_solve_triton

    gen = torch.Generator(device="cuda").manual_seed(t)
    b, d = 2, 256
    ins = [torch.randn(b, t, d, generator=gen, device="cuda").to(dtype),
           torch.randn(b, t, d, generator=gen, device="cuda").to(dtype),
           torch.randn(b, t, d, generator=gen, device="cuda").to(dtype),
           (0.999 * torch.tanh(3 * torch.randn(b, t, generator=gen, device="cuda"))).to(dtype)]
    w = torch.randn(b, t, d, generator=gen, device="cuda")
    ref_in = [x.double().requires_grad_() for x in ins]
    want = feedback_solve_dense(*ref_in)
    want_g = torch.autograd.grad((want * w.double()).sum(), ref_in)
    got_in = [x.clone().requires_grad_() for x in ins]
    got = feedback_solve_triton(*got_in, block=512)
    got_g = torch.autograd.grad((got.float() * w).sum(), got_in)
    for name, g, r in zip(("s", "f", "qb", "kb", "gamma"), (got, *got_g), (want, *want_g)):
        assert ((g.double() - r).norm() / r.norm()).item() <= tol, name
