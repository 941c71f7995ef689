"""Next-item losses over all non-padding positions: full softmax, or sampled softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_softmax_ce(hidden: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the whole catalogue; column 0 (padding) is never a valid class.

    Padding rows are ignored through `ignore_index` rather than gathered away, which would make
    the host wait for the device every step.
    """
    logits = (hidden.reshape(-1, hidden.shape[-1]) @ item_table.to(hidden.dtype).t()).float()
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, targets.reshape(-1), ignore_index=0, reduction=reduction)


def sampled_softmax_ce(hidden: torch.Tensor, targets: torch.Tensor, item_table: torch.Tensor,
                       n_negatives: int, negatives: str = "uniform",
                       generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    """Sampled softmax with log-Q correction, for catalogues too large for a full softmax.

    - uniform: `n_negatives` items drawn uniformly (shared by the batch); accidental hits of
      the target are masked. Q is constant, so the correction cancels.
    - in-batch: the batch's distinct targets are the candidate set; each logit is corrected by
      log of the item's share of the batch's targets (its sampling probability).
    """
    mask = targets > 0
    h = hidden[mask]
    y = targets[mask]
    table = item_table.to(h.dtype)
    if negatives == "uniform":
        n_items = item_table.shape[0] - 1
        neg = torch.randint(1, n_items + 1, (n_negatives,), device=h.device, generator=generator)
        pos_logit = (h * table[y]).sum(-1, keepdim=True).float()
        neg_logits = (h @ table[neg].t()).float()
        neg_logits = neg_logits.masked_fill(neg[None, :] == y[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(y), reduction=reduction)
    if negatives == "in-batch":
        candidates, label, counts = torch.unique(y, return_inverse=True, return_counts=True)
        logits = (h @ table[candidates].t()).float()
        logits = logits - torch.log(counts.float() / y.numel())[None, :]
        return F.cross_entropy(logits, label, reduction=reduction)
    raise ValueError(f"negatives must be 'uniform' or 'in-batch', got '{negatives}'")
