"""The Triton state-pass kernels run under Triton's CPU interpreter (skipped without Triton).

The real check runs on the GPU (benchmarks/check_triton_gpu.py); this one catches indexing and
gradient-formula mistakes on any machine that has Triton installed.
"""

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from sinkrec.ops.delta_rule import delta_rule  # noqa: E402

from .test_delta_rule import inputs, rel  # noqa: E402


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs the Triton interpreter")
@pytest.mark.parametrize("shape", [(1, 100, 2, 16, 16), (2, 64, 1, 32, 24)])
def test_triton_state_pass_matches_reference(shape):
    from sinkrec.ops.delta_rule.triton_chunk import _StatePass, delta_rule_triton

    _StatePass.exact_fp32 = True
    args = [x.detach().float().requires_grad_() for x in inputs(*shape, seed=1)]
    results = []
    for fast in (False, True):
        q, k, v, g, beta, h0 = args
        if fast:
            o, hT = delta_rule_triton(q, k, v, g, beta, shape[3] ** -0.5, h0, chunk_size=16)
        else:
            o, hT = delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, impl="reference")
        gen = torch.Generator().manual_seed(3)
        loss = (o * torch.randn(o.shape, generator=gen)).sum() + (hT * torch.randn(hT.shape, generator=gen)).sum()
        results.append([o, hT, *torch.autograd.grad(loss, args)])
    for fast, ref in zip(results[1], results[0]):
        assert rel(fast, ref) < 1e-5
