"""The inline one-event steps (serve/rows.py: GDN, serve/fused_sinkrec.py: SinkRec) against the models'
own `encode_step`, in float64 on random weights."""

from __future__ import annotations

import pytest
import torch

from sinkrec.models import build_model
from sinkrec.serve import Engine, SQLiteStore
from sinkrec.serve.rows import RowsStep, supports

from .test_serve import _one_thread, random_events, tiny_recommender  # noqa: F401 - fixture


@pytest.mark.parametrize("options", [{}, {"n_layers": 1, "conv_size": 1}, {"n_heads": 4, "head_dim": 8},
                                     {"conv_size": 3, "ffn_mult": 2.0}])
def test_fused_step_equals_encode_step_in_float64(options):
    torch.manual_seed(0)
    model = build_model({"name": "gdn", "d_model": 32, "dropout": 0.0, **options}, 50, 20).eval().double()
    assert supports(model)
    step, a, b = RowsStep(model), model.new_cache(), model.new_cache()
    with torch.inference_mode():
        for t in range(60):
            item = 1 + (t * 17) % 50
            expected = model.encode_step(torch.tensor([[item]]), a)
            got = step(b, item, None)
            assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-12
    for x, y in zip(a, b):
        assert (x.state - y.state).abs().max().item() <= 1e-12
        for name in ("q", "k", "v"):
            assert x.conv[name].shape == y.conv[name].shape
            assert torch.allclose(x.conv[name], y.conv[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["gdn", "sinkrec"])
def test_engine_uses_the_inline_step(name, tmp_path):
    engine = Engine(tiny_recommender(name), SQLiteStore(tmp_path / "g.db"))
    assert engine.fused
    calls = []
    engine.model.encode_step = lambda *a, **k: calls.append(1)  # must not be reached
    engine.record(random_events(10, users=2))
    assert not calls and engine.recommend(user="u0", k=3)["items"]


def test_no_inline_step_for_window_models(tmp_path):
    assert not Engine(tiny_recommender("sasrec"), SQLiteStore(tmp_path / "s.db")).fused


# ---- SinkRec ------------------------------------------------------------------------------------

def _randomise(model, seed: int) -> None:
    """Random values for every weight, including those that start at zero (reinjection values, the
    memory value halves, the readout gate, coverage gains) and the RVQ buffers: every path is live,
    and some codes recur while others do not."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.5 if p.dim() < 2 else p.shape[-1] ** -0.5))
        if model.memory is not None:
            rvq = model.memory.rvq
            rvq.codebooks.copy_(torch.randn(rvq.codebooks.shape, generator=g, dtype=rvq.codebooks.dtype) * 0.3)
            rvq.share.copy_(torch.rand(rvq.share.shape, generator=g, dtype=rvq.share.dtype) * 2)


def _tensors(cache) -> list:
    """Every tensor of a cache, with its place (dataclasses, dicts and lists walked in order)."""
    import dataclasses

    if isinstance(cache, torch.Tensor):
        return [cache]
    if isinstance(cache, (list, tuple)):
        return [t for c in cache for t in _tensors(c)]
    if isinstance(cache, dict):
        return [t for k in sorted(cache) for t in _tensors(cache[k])]
    if dataclasses.is_dataclass(cache):
        return [t for f in dataclasses.fields(cache) for t in _tensors(getattr(cache, f.name))]
    return [cache]


SINKREC_OPTIONS = [{}, {"window": 5}, {"use_memory": False, "window": 4}, {"use_attention": False},
                   {"pattern_len": 1, "prototype_levels": 0}, {"attn_memory_kv": False, "window": 3},
                   {"temporal": False, "coverage_gain": False, "readout_form": "sigmoid"},
                   {"n_blocks": 2, "loops": 1, "conv_size": 1, "window": 6},
                   {"reinject": False, "diff_readout": False, "embed_scale": False, "rvq_levels": 3,
                    "prototype_levels": 2},
                   {"decay_suppression": False, "n_heads": 4, "head_dim": 8, "pattern_len": 4, "window": 7},
                   {"write_suppression": False, "attn_heads": 4, "quantized_to_memory": False}]


@pytest.mark.parametrize("timed", [True, False])
@pytest.mark.parametrize("options", SINKREC_OPTIONS)
def test_sinkrec_fused_step_equals_encode_step_in_float64(options, timed):
    from sinkrec.serve.fused_sinkrec import SinkRecStep
    from sinkrec.serve.fused_sinkrec import supports as sinkrec_supports

    torch.manual_seed(1)
    model = build_model({"name": "sinkrec", "d_model": 32, "dropout": 0.0, "rvq_codes": 8, "code_dim": 8,
                         **options}, 50, 20).eval().double()
    _randomise(model, seed=len(str(options)))
    assert sinkrec_supports(model) and not supports(model)
    step = SinkRecStep(model)
    a, b = model.new_cache(), model.new_cache()
    rng = torch.Generator().manual_seed(2)
    with torch.inference_mode():
        when = 1_000.0
        for t in range(40):
            item = int(torch.randint(1, 51, (), generator=rng))
            when += float(torch.randn((), generator=rng)) * 5_000  # gaps of hours, some negative (clamped)
            times = torch.tensor([[when]], dtype=torch.float64) if timed else None
            expected = model.encode_step(torch.tensor([[item]]), a, times)
            got = step(b, item, when if timed else None)
            assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-12, t
    assert a.steps == b.steps
    left, right = _tensors(a), _tensors(b)
    assert len(left) == len(right)
    for x, y in zip(left, right):
        if isinstance(x, torch.Tensor):
            assert x.shape == y.shape and x.dtype == y.dtype
            assert torch.allclose(x.double(), y.double(), rtol=0, atol=1e-12)
        else:
            assert x == y


def test_sinkrec_fused_step_continues_an_encode_step_cache():
    """A state written by `encode_step` (e.g. an older server) continues with the inline step, and back."""
    from sinkrec.serve.fused_sinkrec import SinkRecStep

    torch.manual_seed(3)
    model = build_model({"name": "sinkrec", "d_model": 32, "dropout": 0.0, "window": 4}, 50, 20).eval().double()
    _randomise(model, seed=5)
    step, a, b = SinkRecStep(model), model.new_cache(), model.new_cache()
    with torch.inference_mode():
        for t in range(30):
            times = torch.tensor([[60.0 * t]], dtype=torch.float64)
            expected = model.encode_step(torch.tensor([[t % 50 + 1]]), a, times)
            got = (model.encode_step(torch.tensor([[t % 50 + 1]]), b, times) if t % 3 == 0
                   else step(b, t % 50 + 1, 60.0 * t))
            assert (got - expected).abs().max().item() <= 1e-12
