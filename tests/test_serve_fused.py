"""The inline one-event GDN step (serve/fused.py) against the model's own `encode_step`, in float64."""

from __future__ import annotations

import pytest
import torch

from sinkrec.models import build_model
from sinkrec.serve import Engine, SQLiteStore
from sinkrec.serve.fused import gdn_step, supports

from .test_serve import _one_thread, random_events, tiny_recommender  # noqa: F401 - fixture


@pytest.mark.parametrize("options", [{}, {"n_layers": 1, "conv_size": 1}, {"n_heads": 4, "head_dim": 8},
                                     {"conv_size": 3, "ffn_mult": 2.0}])
def test_fused_step_equals_encode_step_in_float64(options):
    torch.manual_seed(0)
    model = build_model({"name": "gdn", "d_model": 32, "dropout": 0.0, **options}, 50, 20).eval().double()
    assert supports(model)
    a, b = model.new_cache(), model.new_cache()
    with torch.inference_mode():
        for t in range(60):
            item = 1 + (t * 17) % 50
            expected = model.encode_step(torch.tensor([[item]]), a)
            got = gdn_step(model, b, item)
            assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-12
    for x, y in zip(a, b):
        assert (x.state - y.state).abs().max().item() <= 1e-12
        for name in ("q", "k", "v"):
            assert x.conv[name].shape == y.conv[name].shape
            assert torch.allclose(x.conv[name], y.conv[name], rtol=0, atol=1e-12)


def test_engine_uses_it_for_gdn_only(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "g.db"))
    assert engine.fused and not Engine(tiny_recommender("sinkrec"), SQLiteStore(tmp_path / "s.db")).fused
    calls = []
    engine.model.encode_step = lambda *a, **k: calls.append(1)  # must not be reached
    engine.record(random_events(10, users=2))
    assert not calls and engine.recommend(user="u0", k=3)["items"]
