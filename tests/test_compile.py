"""`train.compile`: the compiled training forward computes what the eager one does."""

import copy

import numpy as np
import pytest
import torch

from sinkrec.batch import Batch
from sinkrec.data import load_dataset
from sinkrec.data.batching import train_batches, trainable_users
from sinkrec.errors import ConfigError
from sinkrec.experiment import make_config
from sinkrec.models import build_model
from sinkrec.training.trainer import Trainer
from tests.test_training import TINY


def _history(n_items: int, b: int, t: int) -> Batch:
    g = torch.Generator().manual_seed(3)
    items = torch.randint(1, n_items + 1, (b, t), generator=g)
    items[1, t - 5:] = 0  # right padding
    times = torch.cumsum(torch.rand(b, t, generator=g, dtype=torch.float64) * 3600, 1)
    return Batch(items=items, lengths=(items > 0).sum(1), timestamps=times, targets=items)


def test_compiled_sinkrec_forward_and_gradients_match_eager():
    """Every SinkRec component on (memory, reinjection, memory attention, TDGD, two loops)."""
    torch.manual_seed(0)
    cfg = {"name": "sinkrec", "d_model": 16, "loops": 2, "n_heads": 2, "dropout": 0.0, "rvq_codes": 8,
           "rvq_levels": 2, "window": 8}
    eager = build_model(cfg, 200, 64).train()
    data = _history(200, 3, 24)
    with torch.no_grad():
        eager.encode(data)  # k-means initialisation happens on the first training batch
    eager.memory.rvq.eval()  # no EMA update: both copies keep identical codebooks
    compiled = copy.deepcopy(eager)
    weights = torch.randn(3, 24, 16, generator=torch.Generator().manual_seed(1))

    h = eager.encode(data).hidden
    (h * weights).sum().backward()
    h2 = torch.compile(compiled, dynamic=False)(data).hidden
    (h2 * weights).sum().backward()

    torch.testing.assert_close(h2, h, rtol=1e-4, atol=1e-5)
    for (name, p), (_, p2) in zip(eager.named_parameters(), compiled.named_parameters()):
        if p.grad is not None:
            scale = p.grad.abs().max().clamp_min(1e-6)
            assert (p2.grad - p.grad).abs().max() / scale < 1e-4, name


def test_width_multiple_rounds_batch_widths_up_to_max_len(tmp_path):
    cfg = make_config({**TINY, "output_dir": str(tmp_path)})
    data = load_dataset(cfg.data)
    users = trainable_users(data.split)
    plain = [b.items.shape[1] for b in train_batches(data.split, users, 30, 16)]
    rounded = [b.items.shape[1] for b in train_batches(data.split, users, 30, 16, width_multiple=8)]
    assert any(w % 8 for w in plain)  # the data has widths the rounding changes
    assert all(r == min(30, -(-w // 8) * 8) for w, r in zip(plain, rounded))


def test_training_with_compile_follows_the_eager_run(tmp_path):
    """Same seed, no dropout: the compiled run's losses equal the eager run's (padding is masked,
    so the rounded widths change nothing)."""
    base = {**TINY, "model": {**TINY["model"], "dropout": 0.0}}

    def fit(name, flag):
        cfg = make_config({**base, "train": {**TINY["train"], "compile": flag}, "output_dir": str(tmp_path / name)})
        trainer = Trainer(cfg, load_dataset(cfg.data))
        return trainer, trainer.fit()

    reference = fit("eager", False)[1]
    trainer, result = fit("compiled", True)
    assert isinstance(trainer.forward, torch._dynamo.eval_frame.OptimizedModule)
    np.testing.assert_allclose([h["loss"] for h in result.history], [h["loss"] for h in reference.history],
                               rtol=1e-4)


def test_unknown_compile_mode_is_named(tmp_path):
    with pytest.raises(ConfigError, match="train.compile_mode .*'fastest'"):  # when the config is built
        make_config({**TINY, "train": {**TINY["train"], "compile": True, "compile_mode": "fastest"},
                     "output_dir": str(tmp_path)})
