"""Diagnostics read models through their public outputs and forward hooks only."""

import numpy as np
import torch

from sinkrec.batch import Batch
from sinkrec.diagnostics.memory_tails import influence, tail_slope
from sinkrec.diagnostics.state_sink import first_delta_layer, mean_key_probes, probe, recorded_states
from sinkrec.lm.model import LMConfig, SessaLM
from sinkrec.models import build_model


def _batch(n_items=40, b=2, t=12):
    items = torch.randint(1, n_items + 1, (b, t), generator=torch.Generator().manual_seed(0))
    return Batch(items=items, lengths=torch.full((b,), t))


def test_recorded_states_replay_the_first_layer_and_leave_no_trace():
    torch.manual_seed(0)
    model = build_model({"name": "gdn", "d_model": 16, "n_heads": 2}, 40, 50).eval().double()
    batch = _batch()
    states, keys = recorded_states(model, batch)
    assert states.shape == (2, 12, 2, 8, 8) and keys.shape == (2, 12, 2, 8)
    caches = model.new_cache()
    model.encode_step(batch.items, caches)  # the streaming path's state after the whole history
    torch.testing.assert_close(states[:, -1], caches[0].state)
    layer = first_delta_layer(model)
    assert not layer.recurrence._forward_pre_hooks  # the hook is removed again
    assert not any(name.startswith(("record", "last_")) for name in vars(layer))


def test_sink_mass_from_sinkrec_codes():
    torch.manual_seed(0)
    model = build_model({"name": "sinkrec", "d_model": 16, "rvq_codes": 8, "code_dim": 8, "window": 4}, 40, 50)
    batch = _batch()
    model.train()(batch)  # k-means initialises the codebooks
    model.eval()
    with torch.no_grad():
        codes = model(batch).codes[..., 0]
    assert codes.shape == (2, 12) and codes.max() < 8
    states, keys = recorded_states(model, batch)
    probe_keys, probe_codes = mean_key_probes(keys, codes, 8)
    result = probe(states, probe_keys, probe_codes, codes, top_fraction=0.25)
    assert result.response.shape == (2, 12, len(probe_codes))
    assert result.sink_mass.shape == (12,) and ((result.sink_mass >= 0) & (result.sink_mass <= 1 + 1e-6)).all()


def test_memory_tails_of_a_decoder():
    torch.manual_seed(0)
    lm = SessaLM(LMConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, mixer="attention")).eval()
    curve = influence(lm, torch.randint(0, 20, (2, 40)), probes=2)
    assert curve.shape == (40,) and np.isfinite(curve).all() and (curve >= 0).all()
    assert np.isfinite(tail_slope(curve))
    lags = np.arange(40, dtype=float)
    assert abs(tail_slope(np.where(lags > 0, lags, 1.0) ** -1.5) + 1.5) < 1e-9
