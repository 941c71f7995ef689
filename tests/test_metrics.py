import math

import numpy as np
import torch

from sinkrec.eval.metrics import finalize, metric_sums, target_ranks


def loop_rank(scores, target, seen):
    """Plain Python: items scoring above the target, plus every other item tied with it."""
    excluded = {0} | ({int(s) for s in seen if s > 0} - {target} if seen is not None else set())
    t = scores[target]
    if math.isnan(t):
        return len(scores) - 2
    rank = 0
    for item, s in enumerate(scores):
        if item == target or item in excluded:
            continue
        if s >= t:
            rank += 1
    return rank


def test_ranks_match_python_loop_with_ties_and_filtering():
    rng = np.random.default_rng(0)
    for trial in range(20):
        b, v = 16, 30
        scores = rng.integers(0, 5, size=(b, v)).astype(np.float32)  # many ties
        targets = rng.integers(1, v, size=b)
        seen = rng.integers(0, v, size=(b, 7))
        seen[:, 0] = targets if trial % 2 else seen[:, 0]  # some repeated targets
        for use_seen in (False, True):
            got = target_ranks(torch.from_numpy(scores), torch.from_numpy(targets),
                               torch.from_numpy(seen) if use_seen else None)
            want = [loop_rank(list(scores[i]), int(targets[i]), seen[i] if use_seen else None) for i in range(b)]
            assert got.tolist() == want


def test_all_tied_scores_give_worst_rank_not_best():
    scores = torch.zeros(3, 11)
    ranks = target_ranks(scores, torch.tensor([1, 5, 10]))
    assert ranks.tolist() == [9, 9, 9]  # 10 real items: the target is behind the other 9


def test_nan_target_is_worst():
    scores = torch.randn(2, 6)
    scores[0, 3] = float("nan")
    ranks = target_ranks(scores, torch.tensor([3, 2]))
    assert ranks[0].item() == 4


def test_metrics_from_ranks():
    ranks = torch.tensor([0, 1, 9, 10, 60])
    m = finalize(metric_sums(ranks, [10, 50]))
    assert m["hr@10"] == 3 / 5
    assert m["hr@50"] == 4 / 5
    want_ndcg10 = (1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5
    assert abs(m["ndcg@10"] - want_ndcg10) < 1e-12
    assert abs(m["mrr"] - sum(1 / (r + 1) for r in [0, 1, 9, 10, 60]) / 5) < 1e-12
