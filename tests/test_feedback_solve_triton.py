"""The Triton feedback solve: on the CPU interpreter (a subprocess with TRITON_INTERPRET=1) and on a GPU."""

import os
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton")

# Triton 3.6's interpreter turns a loop bound into int(1-element array), an error under NumPy ≥ 2.4: index its element.
SHIM = """
import triton.runtime.interpreter as _ti
_patch = _ti._patch_lang_tensor
def _patched(tensor, scope):
    _patch(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
_ti._patch_lang_tensor = _patched
"""

CHECK = SHIM + """
import sys, json
import torch
from sinkrec.ops.feedback_solve import feedback_solve_reference
from sinkrec.ops.feedback_solve import triton_kernels as tk
from sinkrec.ops.feedback_solve.triton_kernels import feedback_solve_triton
for name, value in json.loads(sys.argv[1]).items():
    if name == "REFUSE_FUSED":  # the GPU's answer to a fused dq+dk kernel too big for shared memory
        class Refusing:
            def __init__(self, kernel): self.kernel = kernel
            def __getitem__(self, grid):
                def launch(*args, **kw):
                    if kw["WITH_DQ"]:
                        raise tk.OutOfResources(245760, 232448, "shared memory")
                    return self.kernel[grid](*args, **kw)
                return launch
        tk._dk_kernel = Refusing(tk._dk_kernel)
    else:
        setattr(tk, name, value)
gen = torch.Generator().manual_seed(0)
def rel(a, b): return ((a - b).norm() / b.norm()).item()
# ragged: T not a multiple of the leaf (64 or 128), D and Dq not powers of two, several leaves
for b, t, d, dq, leaf in [(2, 100, 24, 20, 64), (1, 150, 16, 16, 64), (1, 300, 40, 24, 128)]:
    ins = [torch.randn(b, t, d, generator=gen), 2 * torch.randn(b, t, dq, generator=gen),
           2 * torch.randn(b, t, dq, generator=gen), 0.999 * torch.tanh(3 * torch.randn(b, t, generator=gen))]
    w = torch.randn(b, t, d, generator=gen)
    ref_in = [x.double().requires_grad_() for x in ins]
    want = feedback_solve_reference(*ref_in)
    want_g = torch.autograd.grad((want * w.double()).sum(), ref_in)
    got_in = [x.clone().requires_grad_() for x in ins]
    got = feedback_solve_triton(*got_in, block=leaf)
    got_g = torch.autograd.grad((got * w).sum(), got_in)
    errs = [rel(got.double(), want)] + [rel(g.double(), r) for g, r in zip(got_g, want_g)]
    assert max(errs) <= 1e-4, errs
    print("ok", t, max(errs))
"""

ALL_ON = {"LONGEST_FIRST": True, "FUSED_STEP": True, "TRITON_LEAVES": True, "PUSH_SPLIT": True, "INV_BASE": 32,
          "FUSED_DQDK": True}


@pytest.mark.parametrize("switches", [
    {},  # the committed defaults
    {k: type(v)() for k, v in ALL_ON.items()},  # the path measured before issue 25's switches
    ALL_ON,
    {"FUSED_STEP": True},
    {"TRITON_LEAVES": True},
    {"INV_BASE": 32},  # leaf inverses by doubling, PyTorch leaf blocks
    {"FUSED_DQDK": True},
    {"FUSED_DQDK": True, "REFUSE_FUSED": True},  # falls back to the two kernels
    {"PUSH_SPLIT": True, "SPLIT_ATOMIC_COST": 0.0},  # split as far as the loop allows
    {**ALL_ON, "FUSED_DQDK": False, "CFG": {"lse": {"BM": 128, "BN": 128, "num_warps": 8, "num_stages": 2},
                       "push": {"BM": 128, "BN": 32, "num_warps": 8, "num_stages": 2},
                       "dq": {"BM": 128, "BN": 64, "num_warps": 8, "num_stages": 1},
                       "dk": {"BM": 32, "BN": 128, "num_warps": 8, "num_stages": 2},
                       "dqdk": {"BM": 128, "BN": 64, "num_warps": 8, "num_stages": 1}},
     "STEP_CFG": {"BM": 32, "BK": 64, "BD": 32, "num_warps": 2, "num_stages": 3}},  # tiles cut to the leaf
], ids=["defaults", "all_off", "all_on", "fused_step", "triton_leaves", "inv_base", "fused_dqdk",
                                   "fused_dqdk_refused", "push_split", "all_on_tiles"])
def test_triton_interpreter_matches_reference(switches):
    """fp32 (the interpreter does not emulate 16-bit products): output and every gradient ≤ 1e-4 of float64."""
    import json

    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", CHECK, json.dumps(switches)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok") == 3


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.bfloat16, 2e-2)])
def test_triton_gpu_switches_match_dense_float64(dtype, tol, monkeypatch):
    """Every speed switch of triton_kernels on at once (tf32x3 leaf steps, atomics in the split pushes)."""
    from sinkrec.ops.feedback_solve import feedback_solve_dense
    from sinkrec.ops.feedback_solve import triton_kernels as tk

    for name, on in ALL_ON.items():
        monkeypatch.setattr(tk, name, on)
    gen = torch.Generator(device="cuda").manual_seed(5)
    b, t, d = 1, 1337, 256
    ins = [torch.randn(b, t, d, generator=gen, device="cuda").to(dtype) for _ in range(3)]
    ins.append((0.999 * torch.tanh(3 * torch.randn(b, t, generator=gen, device="cuda"))).to(dtype))
    w = torch.randn(b, t, d, generator=gen, device="cuda")
    ref_in = [x.double().requires_grad_() for x in ins]
    want = feedback_solve_dense(*ref_in)
    want_g = torch.autograd.grad((want * w.double()).sum(), ref_in)
    got_in = [x.clone().requires_grad_() for x in ins]
    got = tk.feedback_solve_triton(*got_in, block=512)
    got_g = torch.autograd.grad((got.float() * w).sum(), got_in)
    for name, g, r in zip(("s", "f", "qb", "kb", "gamma"), (got, *got_g), (want, *want_g)):
        assert ((g.double() - r).norm() / r.norm()).item() <= tol, name
