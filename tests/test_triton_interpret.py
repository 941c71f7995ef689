"""The Triton delta-rule kernels run under Triton's CPU interpreter (skipped without Triton).

The real check runs on the GPU (benchmarks/check_triton_gpu.py); this one catches indexing and
gradient-formula mistakes on any machine that has Triton installed. It runs fp32 inputs only: the
interpreter does not emulate the bf16 products used for bf16 inputs, which only the GPU check covers.
"""

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")


def _interpreter_scalar_index() -> None:
    """NumPy ≥ 2.4 no longer converts a one-element array to an int; Triton 3.6's interpreter holds
    scalars as such arrays (a loop bound from tl.minimum fails in `range`): index through the element."""
    import numpy as np
    from triton.runtime import interpreter

    patch = interpreter._patch_lang_tensor
    if getattr(patch, "scalar_index", False):
        return

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    patched.scalar_index = True
    interpreter._patch_lang_tensor = patched


_interpreter_scalar_index()

from sinkrec.ops.delta_rule import delta_rule, triton_chunk  # noqa: E402, F401  (triton_chunk registers the ops)

from .test_delta_rule import inputs as short_memory_inputs  # noqa: E402
from .test_delta_rule import rel  # noqa: E402


def inputs(*shape, seed, state=True):
    """Decays near 1, so every test here also checks how states pass between the kernels' 64-step chunks."""
    return short_memory_inputs(*shape, seed=seed, state=state, long_memory=True)


needs_interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs the Triton interpreter")


def outputs_and_grads(args, impl, initial_state=True, final_state=True, **kw):
    """Outputs, final state and the gradients of a random projection of them (of o alone when not
    `final_state`: the backward then gets no final state's gradient)."""
    q, k, v, g, beta, h0 = args
    o, hT = delta_rule(q, k, v, g, beta, initial_state=h0 if initial_state else None, output_final_state=True,
                       impl=impl, **kw)
    gen = torch.Generator().manual_seed(3)
    loss = (o * torch.randn(o.shape, generator=gen)).sum()
    if final_state:
        loss = loss + (hT * torch.randn(hT.shape, generator=gen)).sum()
    wrt = args if initial_state else args[:5]
    return [o, hT, *torch.autograd.grad(loss, wrt)]


@needs_interpreter
@pytest.mark.parametrize("shape,initial_state", [((1, 64, 1, 16, 16), True), ((2, 150, 2, 32, 48), True),
                                                 ((1, 200, 1, 16, 24), False)])
def test_triton_kernels_match_reference(shape, initial_state):
    """fp32 outputs, final state and every gradient; T not a multiple of 64, Dv not a power of two."""
    args = [x.detach().float().requires_grad_() for x in inputs(*shape, seed=1)]
    ref = outputs_and_grads(args, "reference", initial_state)
    fast = outputs_and_grads(args, "triton", initial_state)
    for a, b in zip(fast, ref):
        assert rel(a, b) < 1e-5


@needs_interpreter
@pytest.mark.parametrize("shape", [(1, 70, 1, 128, 80), (1, 40, 1, 16, 256)])
def test_triton_kernels_blocked_head_sizes(shape):
    """Wide heads run as 64-wide blocks looped inside each program: Dk = 128 (two key blocks) with
    Dv = 80 (two value blocks, the second partly masked); Dk = 16 with Dv = 256 (four value blocks)."""
    args = [x.detach().float().requires_grad_() for x in inputs(*shape, seed=9)]
    ref = outputs_and_grads(args, "reference")
    for a, b in zip(outputs_and_grads(args, "triton"), ref):
        assert rel(a, b) < 1e-5


@needs_interpreter
def test_triton_kernels_packed_and_padded():
    """Packed sequences and padding go through the same dispatcher logic as the other paths."""
    args = [x.detach().float().requires_grad_() for x in inputs(1, 140, 2, 16, 16, seed=2)]
    args[5] = torch.randn(3, 2, 16, 16, requires_grad=True)
    cu = torch.tensor([0, 70, 71, 140])
    ref = outputs_and_grads(args, "reference", cu_seqlens=cu)
    for a, b in zip(outputs_and_grads(args, "triton", cu_seqlens=cu), ref):
        assert rel(a, b) < 1e-5
    args = [x.detach().float().requires_grad_() for x in inputs(2, 90, 1, 16, 16, seed=4)]
    mask = torch.ones(2, 90, dtype=torch.bool)
    mask[0, 50:] = False
    ref = outputs_and_grads(args, "reference", mask=mask)
    for a, b in zip(outputs_and_grads(args, "triton", mask=mask), ref):
        assert rel(a, b) < 1e-5


@needs_interpreter
def test_triton_rejects_unsupported_shapes():
    args = inputs(1, 8, 1, 12, 16, seed=0)
    with pytest.raises(ValueError, match="power of two"):
        delta_rule(*args[:5], impl="triton")


@needs_interpreter
def test_triton_forward_without_grad():
    """Under no_grad the kernels skip what only the backward needs; outputs stay the same."""
    args = [x.detach().float() for x in inputs(2, 130, 2, 16, 16, seed=5)]
    with torch.no_grad():
        fast = delta_rule(*args[:5], initial_state=args[5], output_final_state=True, impl="triton")
    ref = delta_rule(*args[:5], initial_state=args[5], output_final_state=True, impl="reference")
    for a, b in zip(fast, ref):
        assert rel(a, b) < 1e-5


@needs_interpreter
@pytest.mark.parametrize("with_state", [True, False])
def test_custom_ops_pass_opcheck(with_state):
    """Schema, fake-tensor shapes and strides, autograd registration and AOT dispatch of both ops."""
    q, k, v, g, beta, h0 = [x.detach().float() for x in inputs(1, 70, 2, 16, 16, seed=6)]
    # strided views, as a projection's output split into heads: the outputs must not copy input strides
    q, k = (x.transpose(2, 3).contiguous().transpose(2, 3) for x in (q, k))
    reports = triton_chunk.opcheck_ops(q, k, v, g, beta, h0 if with_state else None, scale=0.25)
    assert all(outcome == "SUCCESS" for report in reports.values() for outcome in report.values()), reports


@needs_interpreter
def test_compile_keeps_the_kernels_in_one_graph(monkeypatch):
    """No graph break around the kernels (one CUDA graph under reduce-overhead); same values and grads."""
    import torch._inductor.config
    from torch._dynamo.utils import counters

    # inductor's on-disk graph cache does not key on a custom op's schema: a graph cached before the
    # ops changed would be reused with the old outputs
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)

    args = [x.detach().float().requires_grad_() for x in inputs(1, 80, 2, 16, 16, seed=7)]

    def step(q, k, v, g, beta, h0):
        o, hT = delta_rule(torch.tanh(q), k, v, g, beta, initial_state=h0, output_final_state=True, impl="triton")
        return (o * 1.5).sum() + hT.square().sum()

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(step, dynamic=False)(*args)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    eager = step(*args)
    assert rel(compiled, eager) < 1e-5
    for a, b in zip(torch.autograd.grad(compiled, args), torch.autograd.grad(eager, args)):
        assert rel(a, b) < 1e-5


@needs_interpreter
@pytest.mark.parametrize("t,min_chunks", [(256, 2), (300, 2), (450, 8)])
def test_two_level_state_walk_matches_reference(monkeypatch, t, min_chunks):
    """The grouped state walks (long T, few chains), forward and reversed in the backward: groups of
    √n chunks, a short last group (300 → 5 chunks in groups of 3, 450 → 8 chunks in groups of 3),
    the groups' maps walked by `state_*_maps`; outputs, final state, gradients."""
    monkeypatch.setattr(triton_chunk, "STATE_GROUP_MIN_CHUNKS", min_chunks)
    args = [x.detach().float().requires_grad_() for x in inputs(1, t, 2, 16, 24, seed=8)]
    ref = outputs_and_grads(args, "reference")
    for a, b in zip(outputs_and_grads(args, "triton"), ref):
        assert rel(a, b) < 1e-5


ROUND_SETTINGS = {"defaults": {}, "legacy": triton_chunk.LEGACY,
                  **{f"{key} as before": {key: value} for key, value in triton_chunk.LEGACY.items()}}


@needs_interpreter
@pytest.mark.parametrize("settings", ROUND_SETTINGS.values(), ids=ROUND_SETTINGS.keys())
def test_round_switches_match_reference(monkeypatch, settings):
    """Every switch of the speed round (issue #25) and the path before it (LEGACY): two-level walks,
    T % 64 ≠ 0, one 64-wide Dk and Dv block (the fused backward), narrower and wider ones (the unfused
    one); with and without an initial state and the final state's gradient (the slots the kernels fill
    themselves). A single switch runs the first case only (two-level walks, fused backward)."""
    monkeypatch.setattr(triton_chunk, "STATE_GROUP_MIN_CHUNKS", 2)
    for key, value in settings.items():
        monkeypatch.setattr(triton_chunk, key, value)
    shapes = [((1, 300, 2, 64, 48), True), ((2, 100, 1, 16, 24), False), ((1, 130, 1, 128, 80), True)]
    for shape, with_state in shapes if len(settings) != 1 else shapes[:1]:  # one switch: the first case
        args = [x.detach().float().requires_grad_() for x in inputs(*shape, seed=10)]
        for final_state in (True, False):
            ref = outputs_and_grads(args, "reference", with_state, final_state=final_state)
            for a, b in zip(outputs_and_grads(args, "triton", with_state, final_state=final_state), ref):
                assert rel(a, b) < 1e-5, (shape, final_state)


@pytest.mark.parametrize("dk, dv, fused", [(64, 64, True), (64, 48, True), (64, 33, True), (16, 16, False),
                                           (32, 32, False), (64, 32, False), (64, 16, False), (128, 64, False)])
def test_fused_backward_only_on_64_wide_blocks(dk, dv, fused):
    """The fused backward kernel faulted on the GPU with blocks narrower than 64 (head dim 16: GDN with 4
    heads at d_model 64), which the interpreter cannot show; such head sizes take the two-kernel path."""
    assert triton_chunk.fused_backward(triton_chunk._shapes(torch.bfloat16, dk, dv)) is fused


@needs_interpreter
@pytest.mark.parametrize("shape", [(1, 100, 1, 256, 16), (1, 70, 2, 32, 256), (2, 65, 1, 64, 64)])
def test_triton_kernels_head_sizes_16_to_256(shape):
    """Dk and Dv from 16 to 256 (blocked up to four 64-wide blocks), T one past a chunk."""
    args = [x.detach().float().requires_grad_() for x in inputs(*shape, seed=12)]
    ref = outputs_and_grads(args, "reference")
    for a, b in zip(outputs_and_grads(args, "triton"), ref):
        assert rel(a, b) < 1e-5


@needs_interpreter
@pytest.mark.parametrize("legacy", [False, True])
def test_bf16_stored_operands(monkeypatch, legacy):
    """T, U, Wk and the states stored in bf16 (as for bf16 inputs on the GPU), fp32 products (the
    interpreter does not emulate bf16 ones): every consumer reads them right; the error is that of
    one bf16 rounding (≈ 3e-3 here), far inside the GPU check's 2e-2."""
    monkeypatch.setattr(triton_chunk, "_store_dtype", lambda *_: torch.bfloat16)
    monkeypatch.setattr(triton_chunk, "STATE_GROUP_MIN_CHUNKS", 2)
    for key, value in (triton_chunk.LEGACY if legacy else {}).items():
        monkeypatch.setattr(triton_chunk, key, value)
    args = [x.detach().float().requires_grad_() for x in inputs(1, 150, 2, 64, 64, seed=3)]
    ref = outputs_and_grads(args, "reference")
    for a, b in zip(outputs_and_grads(args, "triton"), ref):
        assert rel(a, b) < 1e-2
