import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sinkrec.batch import Batch
from sinkrec.lm.model import LMConfig, SessaLM
from sinkrec.models import build_model
from sinkrec.nn.sessa import SessaLayer, SessaMixer, rope
from sinkrec.ops.feedback_solve import feedback_solve_dense, feedback_solve_reference


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_reference_and_dense_solve_agree_with_gradients():
    gen = torch.Generator().manual_seed(0)
    f, qb, kb = (torch.randn(2, 37, d, generator=gen, dtype=torch.float64, requires_grad=True) for d in (5, 8, 8))
    gamma = (0.999 * torch.tanh(torch.randn(2, 37, generator=gen, dtype=torch.float64))).requires_grad_()
    outs, grads = [], []
    for solve in (feedback_solve_reference, feedback_solve_dense):
        s = solve(f, qb, kb, gamma)
        w = torch.randn(s.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        outs.append(s)
        grads.append(torch.autograd.grad((s * w).sum(), [f, qb, kb, gamma]))
    assert rel(outs[1], outs[0]) <= 1e-10
    for g_dense, g_ref in zip(grads[1], grads[0]):
        assert rel(g_dense, g_ref) <= 1e-10


def test_stability_bound():
    gen = torch.Generator().manual_seed(2)
    f = torch.randn(3, 200, 4, generator=gen, dtype=torch.float64)
    qb, kb = (torch.randn(3, 200, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    gamma = torch.full((3, 200), 0.9, dtype=torch.float64)
    s = feedback_solve_dense(f, qb, kb, gamma)
    assert s.norm(dim=-1).max() <= f.norm(dim=-1).max() / (1 - 0.9) + 1e-9


def test_uniform_routing_closed_form_and_power_law_slope():
    t, tau, g = 4096, 0, 0.6
    f = torch.zeros(1, t, 1, dtype=torch.float64)
    f[0, tau, 0] = 1.0
    zeros = torch.zeros(1, t, 4, dtype=torch.float64)  # W^b = 0 ⇒ α_{t,j} = 1/t
    s = feedback_solve_dense(f, zeros, zeros, torch.full((1, t), g, dtype=torch.float64))[0, :, 0]
    lag = np.arange(1, t - tau)
    closed = g * np.exp(math.lgamma(tau + 1) - math.lgamma(tau + 1 + g)
                        + np.array([math.lgamma(tau + l + g) - math.lgamma(tau + l + 1) for l in lag]))
    got = s[tau + 1:].numpy()
    assert np.max(np.abs(got - closed) / closed) <= 1e-6
    window = lag >= 64
    slope = np.polyfit(np.log(lag[window]), np.log(got[window]), 1)[0]
    assert abs(slope - (-(1 - g))) <= 0.02


def test_gamma_zero_is_plain_gated_attention():
    torch.manual_seed(0)
    layer = SessaLayer(16, n_heads=2).double()
    mixer = layer.mixer
    with torch.no_grad():
        mixer.w_gamma.weight.zero_()
        mixer.b_gamma.zero_()  # γ = γ_max·tanh(0) = 0
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    a, g = layer.inp(layer.norm(x)).chunk(2, -1)
    a = F.gelu(a)
    q = rope(mixer.q(a).view(2, 11, 2, 8), 0).transpose(1, 2)
    k = rope(mixer.k(a).view(2, 11, 2, 8), 0).transpose(1, 2)
    v = mixer.v(a).view(2, 11, 2, 8).transpose(1, 2)
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 11, 16)
    want = x + layer.out(mixer.out(attn) * g)
    assert torch.allclose(layer(x), want, atol=1e-12)


def test_rope_is_relative():
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8, dtype=torch.float64)
    a = (rope(q, 5) * rope(k, 2)).sum()
    b = (rope(q, 13) * rope(k, 10)).sum()
    assert torch.allclose(a, b)


@pytest.mark.parametrize("mixer, kv", [("sessa", 0), ("sessa", 1), ("attention", 0), ("gdn", 0)])
def test_incremental_decoding_equals_full_forward(mixer, kv):
    torch.manual_seed(0)
    lm = SessaLM(LMConfig(vocab_size=30, d_model=16, n_layers=2, n_heads=2, n_kv_heads=kv, mixer=mixer)).eval()
    tokens = torch.randint(0, 30, (2, 15))
    full = lm(tokens)
    caches = lm.new_caches()
    steps = [lm(tokens[:, :6], caches)] + [lm(tokens[:, t:t + 1], caches) for t in range(6, 15)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_generation_greedy_matches_argmax_of_full_forward():
    torch.manual_seed(0)
    lm = SessaLM(LMConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=1)).eval()
    prompt = torch.randint(0, 20, (1, 4))
    out = lm.generate(prompt, 5)
    for t in range(4, 9):
        assert out[0, t] == lm(out[:, :t])[0, -1].argmax()
    sampled = lm.generate(prompt, 5, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (1, 9)


def test_sessa_recommender_streams_and_is_causal():
    torch.manual_seed(0)
    model = build_model({"name": "sessa", "d_model": 16}, 40, 50).eval().double()
    items = torch.randint(1, 41, (2, 12))
    batch = Batch(items=items, lengths=torch.tensor([12, 12]))
    full = model.encode(batch).hidden
    cache = model.new_cache()
    steps = [model.encode_step(items[:, :5], cache)] + [model.encode_step(items[:, t:t + 1], cache)
                                                        for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-10)
    changed = items.clone()
    changed[:, 7:] = torch.randint(1, 41, (2, 5))
    out = model.encode(Batch(items=changed, lengths=batch.lengths)).hidden
    assert torch.allclose(out[:, :7], full[:, :7], atol=1e-12)


def test_mixer_rejects_bad_head_counts():
    with pytest.raises(ValueError, match="do not divide"):
        SessaMixer(16, n_heads=3)


def test_lm_cli_trains_and_generates(tmp_path, capsys):
    from sinkrec.cli import main

    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 200)
    assert main(["lm", "train", "--text", str(text), "--steps", "20", "--context", "32", "--d-model", "16",
                 "--n-heads", "2", "--n-layers", "1", "--out", str(tmp_path / "lm")]) == 0
    assert "valid perplexity" in capsys.readouterr().out
    assert main(["lm", "generate", str(tmp_path / "lm"), "--prompt", "the ", "--tokens", "10"]) == 0
    assert capsys.readouterr().out.startswith("the ")
    assert main(["lm", "train", "--text", str(tmp_path / "missing.txt")]) == 2
