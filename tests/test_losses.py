import torch
import torch.nn.functional as F

from sinkrec.training.losses import full_softmax_ce, sampled_softmax_ce


def test_full_ce_ignores_padding_positions():
    torch.manual_seed(0)
    hidden, table = torch.randn(2, 5, 8), torch.randn(11, 8)
    targets = torch.tensor([[3, 4, 0, 0, 0], [1, 2, 10, 5, 0]])
    mask = targets > 0
    logits = hidden[mask] @ table.t()
    want = F.cross_entropy(logits[:, 1:], targets[mask] - 1)  # padding column excluded
    assert torch.allclose(full_softmax_ce(hidden, targets, table), want, atol=1e-6)


def test_sampled_softmax_variants_are_finite_and_learn():
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(51, 16) * 0.1)
    hidden = torch.nn.Parameter(torch.randn(4, 6, 16) * 0.1)
    targets = torch.randint(1, 51, (4, 6))
    for negatives in ("uniform", "in-batch"):
        opt = torch.optim.SGD([table, hidden], lr=0.5)
        first = None
        for _ in range(30):
            loss = sampled_softmax_ce(hidden, targets, table, 20, negatives)
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert torch.isfinite(loss) and loss.item() < first
        # the full-softmax loss falls too: sampled training optimises the real objective
        assert full_softmax_ce(hidden, targets, table).item() < 4.0
