"""Score every user's held-out item against the whole catalogue."""

from __future__ import annotations

import numpy as np
import torch

from ..config import EvalConfig
from ..data.batching import eval_batches
from ..data.sequences import Split
from ..errors import NonFiniteError
from ..nn.attention import without_cudnn_attention
from .metrics import add_sums, finalize, metric_sums, target_ranks


@torch.no_grad()
def evaluate_sums(model: torch.nn.Module, split: Split, which: str, cfg: EvalConfig, max_len: int,
             device: torch.device | str = "cpu", users: np.ndarray | None = None,
             autocast: bool = False) -> dict[str, float]:
    """Metric sums (plus `count` and `repeat_targets`) over `users`; add them up across processes."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    repeats = 0
    if users is None:  # similar lengths share a batch: less padding; sums do not depend on order
        users = np.argsort(split.store.lengths, kind="stable")
    for batch in eval_batches(split, which, max_len, cfg.batch_size, users):
        batch = batch.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast), without_cudnn_attention(device):
            scores = model.score_users(batch)
        if not bool(torch.isfinite(scores[:, 1:]).all()):  # NaN would rank silently as a miss
            users = int((~torch.isfinite(scores[:, 1:])).any(1).sum())
            raise NonFiniteError(f"the model scored items NaN or inf for {users} users of a batch: its weights "
                                 f"are damaged or its training diverged")
        seen = batch.seen if cfg.filter_seen else None
        ranks = target_ranks(scores, batch.targets, seen)
        sums = add_sums(sums, metric_sums(ranks, cfg.topk))
        repeats += int((batch.seen == batch.targets[:, None]).any(1).sum())
    model.train(was_training)
    sums["repeat_targets"] = float(repeats)
    return sums


def metrics_from_sums(sums: dict[str, float]) -> dict[str, float]:
    metrics = finalize({k: v for k, v in sums.items() if k != "repeat_targets"})
    metrics["users"] = sums.get("count", 0.0)
    metrics["repeat_targets"] = sums.get("repeat_targets", 0.0)
    return metrics


def evaluate(model: torch.nn.Module, split: Split, which: str, cfg: EvalConfig, max_len: int,
             device: torch.device | str = "cpu", users: np.ndarray | None = None,
             autocast: bool = False) -> dict[str, float]:
    """Full-ranking HR/NDCG@K and MRR for `which` ∈ {valid, test}; filter_seen per `cfg`."""
    return metrics_from_sums(evaluate_sums(model, split, which, cfg, max_len, device, users, autocast))
