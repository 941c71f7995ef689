"""Full-ranking metrics. Ranks are 0-based; ties never favour the target."""

from __future__ import annotations

import math

import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Rank of each target among all items (column 0 = padding is never ranked).

    `seen` [B, S] holds the input history (0-padded); with it, history items other than the
    target are excluded from the ranking (filter_seen). A target tied with k other items gets
    rank (number of higher items) + k, i.e. it is placed after every tied item. A NaN target
    score gets the worst rank.
    """
    scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores.clone()
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_score = scores[rows, targets].clone()
    scores[:, 0] = float("-inf")
    if seen is not None:
        scores.scatter_(1, seen, float("-inf"))
        scores[rows, targets] = target_score
    higher = (scores > target_score[:, None]).sum(1)
    tied = (scores == target_score[:, None]).sum(1) - 1
    ranks = higher + tied
    worst = scores.shape[1] - 2
    return torch.where(torch.isnan(target_score), torch.full_like(ranks, worst), ranks)


def metric_sums(ranks: torch.Tensor, topk: list[int]) -> dict[str, float]:
    """Per-batch sums (not means) so batches and processes reduce exactly."""
    ranks = ranks.double()
    out = {"count": float(ranks.numel()), "mrr": (1.0 / (ranks + 1)).sum().item()}
    gains = 1.0 / torch.log2(ranks + 2)
    for k in topk:
        hit = ranks < k
        out[f"hr@{k}"] = hit.sum().item()
        out[f"ndcg@{k}"] = (gains * hit).sum().item()
    return out


def finalize(sums: dict[str, float]) -> dict[str, float]:
    count = sums["count"]
    return {k: (v / count if count else math.nan) for k, v in sums.items() if k != "count"}


def add_sums(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    return {k: total.get(k, 0.0) + v for k, v in part.items()}
