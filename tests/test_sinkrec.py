import pytest
import torch

from sinkrec.batch import Batch
from sinkrec.models import build_model
from sinkrec.nn.rvq import ResidualVQ

SMALL = {"name": "sinkrec", "d_model": 16, "rvq_codes": 8, "window": 4, "code_dim": 8}
ABLATIONS = {
    "use_memory": False, "reinject": False, "attn_memory_kv": False, "use_attention": False,
    "write_suppression": False, "decay_suppression": False, "diff_readout": False, "temporal": False,
    "loops": 1, "prototype_levels": 0,
}


def batch(b=3, t=13, seed=0, pad_last=True):
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 41, (b, t), generator=gen)
    lengths = torch.full((b,), t)
    if pad_last:
        lengths[-1] = t - 4
        items[-1, t - 4:] = 0
    times = torch.cumsum(torch.rand(b, t, generator=gen, dtype=torch.float64) * 1e4, 1)
    return Batch(items=items, lengths=lengths, timestamps=times)


def model(**overrides):
    torch.manual_seed(0)
    m = build_model({**SMALL, **overrides}, 40, 50).double()
    m.train()
    m.encode(batch(8, 20, seed=5, pad_last=False))  # k-means initialises the codebooks
    return m.eval()


def test_shapes_losses_and_causality():
    m = model()
    b = batch()
    out = m.encode(b).hidden
    assert out.shape == (3, 13, 16) and torch.isfinite(out).all()
    changed = b.items.clone()
    changed[:, 8:] = torch.randint(1, 41, (3, 5))
    changed[-1, 9:] = 0
    out2 = m.encode(Batch(items=changed, lengths=b.lengths, timestamps=b.timestamps)).hidden
    assert torch.allclose(out[:, :8], out2[:, :8], atol=1e-12)
    assert not torch.allclose(out[:, 8:], out2[:, 8:])
    m.train()
    encoded = m(b)
    assert set(encoded.losses) == {"vq"} and encoded.losses["vq"] > 0
    assert encoded.codes.shape == (3, 13, m.options.rvq_levels) and (encoded.codes[-1, 9:] == 0).all()  # 0 at padding
    assert not hasattr(m, "last_codes") and not hasattr(m, "_vq_loss")  # returned, not stashed


@pytest.mark.parametrize("timestamps", [True, False])
def test_incremental_inference_equals_full_forward(timestamps):
    m = model()
    b = batch(2, 17, pad_last=False)
    times = b.timestamps if timestamps else None
    full = m.encode(Batch(items=b.items, lengths=b.lengths, timestamps=times)).hidden
    cache = m.new_cache()
    outs = [m.encode_step(b.items[:, :6], cache, times[:, :6] if timestamps else None)]
    for t in range(6, 17):
        outs.append(m.encode_step(b.items[:, t:t + 1], cache, times[:, t:t + 1] if timestamps else None))
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-10)


@pytest.mark.parametrize("switch", sorted(ABLATIONS))
def test_each_ablation_switch_removes_its_component(switch):
    full = model()
    with torch.no_grad():  # move every parameter off its init (w_δ starts at 0, for one)
        for p in full.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ablated = model(**{switch: ABLATIONS[switch]})
    full_names = {n for n, _ in full.named_parameters()}
    ablated_names = {n for n, _ in ablated.named_parameters()}
    assert ablated_names <= full_names
    missing = ablated.load_state_dict(full.state_dict(), strict=False).missing_keys
    assert not missing
    b = batch()
    assert not torch.allclose(full.encode(b).hidden, ablated.encode(b).hidden, atol=1e-9)
    if switch in ("use_memory", "reinject", "attn_memory_kv", "use_attention", "write_suppression",
                  "diff_readout", "temporal", "prototype_levels"):
        assert ablated_names < full_names  # the component's parameters are gone


def test_all_switches_off_leaves_a_plain_gated_deltanet():
    m = model(**ABLATIONS)
    names = {n.split(".")[-2] if "." in n else n for n, _ in m.named_parameters()}
    assert m.memory is None and m.blocks[0].attn is None and m.blocks[0].reinject is None
    assert not any("memory" in n or "kappa" in n or "time_weight" in n for n, _ in m.named_parameters()), names


def test_rvq_round_trip_and_kmeans_init():
    torch.manual_seed(0)
    rvq = ResidualVQ(6, levels=3, codes=16).double()
    x = torch.randn(500, 6, dtype=torch.float64)
    rvq.train()
    rvq(x)  # k-means init + one EMA step
    rvq.eval()
    out = rvq(x)
    assert torch.equal(rvq.encode(x), out.codes)
    assert torch.allclose(rvq.decode(out.codes), out.quantized, atol=1e-12)
    # residual levels reduce the error level by level
    errors = [(x - sum(rvq.codebooks[l][out.codes[:, l]] for l in range(k))).pow(2).mean().item()
              for k in range(1, 4)]
    assert errors[0] > errors[1] > errors[2]


def test_rvq_straight_through_gradient_reaches_the_input():
    rvq = ResidualVQ(4, levels=2, codes=8).double()
    x = torch.randn(50, 4, dtype=torch.float64, requires_grad=True)
    rvq.train()
    out = rvq(x)
    (out.quantized.sum() + out.loss).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_dead_code_restart_moves_unused_codes_onto_the_data():
    torch.manual_seed(0)
    rvq = ResidualVQ(4, levels=1, codes=32, kmeans_init=False, decay=0.5, dead_threshold=0.5).double()
    rvq.codebooks[0, :] = 100.0  # every code far away...
    rvq.codebooks[0, 0] = 0.0  # ...except one: all data maps to code 0, the rest are dead
    rvq.ema_sum[0] = rvq.codebooks[0].clone()
    rvq.train()
    x = torch.randn(256, 4, dtype=torch.float64)
    for _ in range(3):
        rvq(x)
    stats = rvq.usage_stats()
    assert stats["rvq0_restarts"] > 0
    assert (rvq.codebooks[0].abs() < 50).all()  # every code now sits near the data
    rvq(x)
    assert rvq.usage_stats()["rvq0_used"] > 0.5  # and most of them are used again


@pytest.mark.parametrize("overrides", [{}, {"n_blocks": 2, "loops": 1}, {"prototype_levels": 0, "reinject": False}])
def test_untrained_sinkrec_computes_exactly_what_sinkrec_without_memory_computes(overrides):
    """Identity at initialisation: every memory path starts as an exact no-op, seed for seed."""
    torch.manual_seed(3)
    with_memory = build_model({**SMALL, **overrides}, 40, 50).double()
    torch.manual_seed(3)
    without = build_model({**SMALL, **overrides, "use_memory": False}, 40, 50).double().eval()
    b = batch()
    reference = without.encode(b).hidden
    assert torch.equal(with_memory.eval().encode(b).hidden, reference)
    with torch.no_grad():
        with_memory.train()(batch(8, 20, seed=5, pad_last=False))  # k-means init + EMA step: buffers only
    assert torch.equal(with_memory.eval().encode(b).hidden, reference)
    # ... while the memory is live: its paths receive gradient from the first step
    with_memory.train()
    with_memory.encode(b).hidden.pow(2).sum().backward()
    tdgd = with_memory.blocks[0].tdgd
    assert tdgd.coverage_gain.grad.abs().sum() > 0 and tdgd.readout_gate.weight.grad.abs().sum() > 0
    assert with_memory.blocks[0].attn.memory_kv.weight.grad[16:].abs().sum() > 0


def test_vq_loss_does_not_move_the_item_table():
    m = model().train()
    encoded = m.encode(batch())
    encoded.losses["vq"].backward()
    grad = m.item_embedding.weight.grad
    assert grad is None or torch.count_nonzero(grad) == 0
    assert m.memory.pattern.weight.grad.abs().sum() > 0  # the pattern encoder does learn from it


def test_codebook_decay_warms_up_then_holds():
    rvq = ResidualVQ(4, levels=1, codes=8, decay=0.9, decay_final=0.999, decay_warmup=10, kmeans_init=False)
    rvq.train()
    x = torch.randn(64, 4)
    assert abs(float(rvq.current_decay()) - 0.9) < 1e-6
    for _ in range(5):
        rvq(x)
    assert abs(float(rvq.current_decay()) - 0.9495) < 1e-5
    for _ in range(10):
        rvq(x)
    before = rvq.codebooks.clone()
    assert abs(float(rvq.current_decay()) - 0.999) < 1e-6
    rvq(x)
    assert (rvq.codebooks - before).abs().max() < 0.01  # settled codebooks barely move


def test_rare_codes_read_a_null_memory_and_usage_is_logged():
    m = model()
    b = batch(pad_last=False)
    codes = m.memory(m.item_embedding(b.items), b.items > 0).codes[..., 0]
    rare = codes[0, 0]
    with torch.no_grad():
        m.memory.rvq.share[0, rare] = 0.1  # a code far below its uniform share of positions
    out = m.memory(m.item_embedding(b.items), b.items > 0)
    null = out.codes[..., 0] == rare
    assert null.any() and (~null).any()
    assert (out.recurs[null] == 0).all() and (out.memory[null] == 0).all()
    assert (out.recurs[~null] == 1).all() and (out.memory[~null].abs().sum(-1) > 0).all()
    m.train()(b)
    stats = m.epoch_stats()
    logged = {"rvq0_perplexity", "rvq0_used", "rvq0_recurring", "rvq1_recurring", "rvq_covered", "rvq_decay"}
    assert logged <= set(stats)
    assert 0 < stats["rvq_covered"] <= 1


def test_memory_attention_dense_path_equals_the_blocked_one():
    from sinkrec.nn.memory_attention import MemoryAttention
    torch.manual_seed(0)
    attn = MemoryAttention(16, n_heads=2, window=4).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, memory = torch.randn(3, 13, 16, dtype=torch.float64), torch.randn(3, 13, 16, dtype=torch.float64)
    recurs = (torch.rand(3, 13) > 0.3).double()
    slots = attn.prepare(memory, recurs, torch.randn(8, 16, dtype=torch.float64), torch.rand(8) > 0.5, torch.float64)
    dense, _ = attn(x, slots, keep=False)  # T ≤ 4w without cache: one banded call
    blocked, cache = attn(x, slots, keep=True)
    torch.testing.assert_close(dense, blocked, atol=1e-12, rtol=0)
    assert cache.memory_valid.shape == (3, 4)
