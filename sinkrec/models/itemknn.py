"""ItemKNN-style transition baseline: the next item is scored by how often it followed the
user's latest items in the training split.

sim(i, j) = C[i, j] / (n_i^(1-alpha) · n_j^alpha + shrink), where C[i, j] counts j appearing
within `window` steps after i (weighted 1/distance) and n are item counts; alpha = 0.5 is the
cosine form, which keeps very popular successors from winning by count alone. A user's score is
the decayed sum over the last `history` items; popularity breaks the remaining ties, so an item
no neighbour names still ranks like `pop` ranks it. Fitted in one pass, no gradients.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..batch import Batch
from .pop import FittedRecommender

TIE_BREAK = 1e-6  # popularity's share of a score: below any neighbour evidence


@dataclass
class ItemKNNConfig:
    window: int = 1  # j counts as a neighbour of i when it follows i within this many steps
    history: int = 3  # latest items of a user's history that vote
    decay: float = 0.5  # weight of the k-th latest item = decay^k
    alpha: float = 0.5  # 0.5: cosine normalisation; 0: P(j | i); 1: divide by the successor's count only
    shrink: float = 10.0  # added to the denominator: damps pairs of rare items


class ItemKNN(FittedRecommender):
    def __init__(self, n_items: int, max_len: int, options: ItemKNNConfig):
        super().__init__(n_items)
        if options.window < 1 or options.history < 1:
            raise ValueError("itemknn: window and history must be ≥ 1")
        self.options = options
        self.register_buffer("popularity", torch.zeros(n_items + 1))
        self.similarity_t = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0),
                                                    (n_items + 1, n_items + 1), check_invariants=False)

    def fit(self, sequences: Iterable[np.ndarray]) -> ItemKNN:
        n, opts = self.n_items + 1, self.options
        sequences = [np.asarray(s, dtype=np.int64) for s in sequences]
        counts = np.bincount(np.concatenate(sequences) if sequences else np.zeros(0, np.int64), minlength=n)
        sources, targets, weights = [], [], []
        for d in range(1, opts.window + 1):
            for seq in sequences:
                if len(seq) > d:
                    sources.append(seq[:-d])
                    targets.append(seq[d:])
                    weights.append(np.full(len(seq) - d, 1.0 / d))
        if sources:
            keys = np.concatenate(sources) * n + np.concatenate(targets)
            pairs, inverse = np.unique(keys, return_inverse=True)
            values = np.bincount(inverse, weights=np.concatenate(weights))
            i, j = pairs // n, pairs % n
            keep = i != j  # an item never votes for itself
            i, j, values = i[keep], j[keep], values[keep]
            values = values / (counts[i] ** (1 - opts.alpha) * counts[j] ** opts.alpha + opts.shrink)
        else:
            i = j = np.zeros(0, np.int64)
            values = np.zeros(0)
        index = torch.from_numpy(np.stack([j, i]))  # transposed: scores = (S^T @ X^T)^T
        self.similarity_t = torch.sparse_coo_tensor(index, torch.from_numpy(values).float(), (n, n),
                                                    check_invariants=False).coalesce()
        pop = counts.astype(np.float32)
        pop[0] = 0.0
        self.popularity = torch.from_numpy(pop / max(1.0, float(pop.max())))
        return self

    def score_users(self, batch: Batch) -> torch.Tensor:
        items, lengths = batch.items, batch.lengths
        rows = torch.arange(items.shape[0], device=items.device)
        votes = torch.zeros(items.shape[0], self.n_items + 1, device=items.device)
        for k in range(self.options.history):
            position = lengths - 1 - k
            valid = (position >= 0).float()
            item = items[rows, position.clamp_min(0)]
            votes.index_put_((rows, item), valid * self.options.decay ** k, accumulate=True)
        votes[:, 0] = 0.0
        similarity_t = self.similarity_t.to(items.device)
        scores = torch.sparse.mm(similarity_t, votes.t()).t()
        return scores + TIE_BREAK * self.popularity.to(items.device)
