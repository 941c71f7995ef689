"""Diagnostics read models through their public outputs and forward hooks only."""

import numpy as np
import torch

from sinkrec.batch import Batch
from sinkrec.diagnostics.memory_tails import influence, tail_slope
from sinkrec.diagnostics.state_sink import first_delta_layer, mean_key_probes, probe, recorded_states, sink_detected
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


def _planted_states(sink: bool, t: int = 120, j: int = 10, users: int = 3):
    """States written from orthonormal prototype keys; codes 0 and 1 recur (60% of the steps).

    With `sink`, each write adds to the state (no delta correction, no decay), so S_t holds each
    prototype in proportion to how often it occurred: the recurring ones dominate. Without it, a
    key's write replaces what the state held for it (β = 1 delta rule): every seen prototype has
    the same weight, whatever its count.
    """
    gen = torch.Generator().manual_seed(0)
    keys = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))[0][:j]  # [J, Dk]
    values = torch.nn.functional.normalize(torch.randn(j, 8, generator=gen, dtype=torch.float64), dim=-1)
    frequent = torch.rand(users, t, generator=gen) < 0.6
    codes = torch.where(frequent, torch.randint(0, 2, (users, t), generator=gen),
                        torch.randint(2, j, (users, t), generator=gen))
    state = torch.zeros(users, 16, 8, dtype=torch.float64)
    states = []
    for step in range(t):
        k, v = keys[codes[:, step]], values[codes[:, step]]  # [B, Dk], [B, Dv]
        if not sink:  # delta rule, β = 1: remove what the state recalls for k, then write v
            state = state - k[:, :, None] * torch.einsum("bk,bkv->bv", k, state)[:, None, :]
        state = state + k[:, :, None] * v[:, None, :]
        states.append(state.clone())
    return torch.stack(states, 1)[:, :, None], keys[:, None], codes  # [B, T, 1, Dk, Dv], [J, 1, Dk], [B, T]


def test_state_sink_diagnostic_detects_a_planted_sink_and_not_a_balanced_state():
    states, keys, codes = _planted_states(sink=True)
    planted = probe(states, keys, torch.arange(10), codes, top_fraction=0.2)
    assert sink_detected(planted)
    assert planted.sink_mass[-10:].mean() > 0.5 and planted.sink_mass[-10:].mean() > planted.chance[-10:].mean() + 0.3
    states, keys, codes = _planted_states(sink=False)
    balanced = probe(states, keys, torch.arange(10), codes, top_fraction=0.2)
    assert not sink_detected(balanced)
    np.testing.assert_allclose(balanced.sink_mass[-10:], balanced.chance[-10:], atol=1e-6)
