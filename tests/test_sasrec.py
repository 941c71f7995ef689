import torch

from sinkrec.batch import Batch
from sinkrec.models import build_model


def test_last_hidden_fast_path_equals_full_encode():
    torch.manual_seed(0)
    model = build_model({"name": "sasrec", "d_model": 32, "n_heads": 2, "n_layers": 2}, 50, 20).eval().double()
    lengths = torch.tensor([20, 7, 1, 13])
    items = torch.randint(1, 51, (4, 20)) * (torch.arange(20)[None] < lengths[:, None])
    batch = Batch(items=items, lengths=lengths)
    full = model.encode(batch).hidden[torch.arange(4), lengths - 1]
    assert torch.allclose(model.last_hidden(batch), full, atol=1e-12)


def test_causal_no_output_depends_on_the_future():
    torch.manual_seed(0)
    model = build_model({"name": "sasrec", "d_model": 16}, 30, 12).eval().double()
    items = torch.randint(1, 31, (2, 12))
    base = model.encode(Batch(items=items, lengths=torch.tensor([12, 12]))).hidden
    changed = items.clone()
    changed[:, 8:] = torch.randint(1, 31, (2, 4))
    out = model.encode(Batch(items=changed, lengths=torch.tensor([12, 12]))).hidden
    assert torch.allclose(base[:, :8], out[:, :8]) and not torch.allclose(base[:, 8:], out[:, 8:])
