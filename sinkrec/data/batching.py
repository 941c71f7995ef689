"""Turn a split store into padded tensors for training and evaluation.

Sequences are right-padded with item 0; `lengths` gives the number of real positions, so a
causal model never sees padding before real items and the user state is at `lengths - 1`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..batch import Batch
from .sequences import Split

__all__ = ["Batch", "eval_batches", "train_batches", "trainable_users"]


def _pad(rows: list[np.ndarray], width: int, dtype: np.dtype) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def trainable_users(split: Split) -> np.ndarray:
    """Users whose training part has at least one (input, next item) pair."""
    store = split.store
    return np.flatnonzero(store.lengths - 2 >= 2)


def train_batches(split: Split, users: np.ndarray, max_len: int, batch_size: int,
                  rng: np.random.Generator | None = None, width_multiple: int = 1) -> Iterator[Batch]:
    """Autoregressive training batches over the last `max_len + 1` training events per user.

    `width_multiple` > 1 rounds each batch's width up (at most to `max_len`), so a compiled model
    sees a few shapes instead of one per distinct longest history.
    """
    store = split.store
    order = users if rng is None else rng.permutation(users)
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        inputs, targets, times = [], [], []
        for user in chunk:
            begin, end = int(store.offsets[user]), split.train_end(int(user))
            begin = max(begin, end - max_len - 1)
            seq = store.items[begin:end]
            inputs.append(seq[:-1])
            targets.append(seq[1:])
            if store.timestamps is not None:
                times.append(store.timestamps[begin: end - 1])
        width = max(len(r) for r in inputs)
        width = min(max_len, -(-width // width_multiple) * width_multiple)
        yield Batch(
            items=torch.from_numpy(_pad(inputs, width, np.int64)),
            lengths=torch.tensor([len(r) for r in inputs]),
            timestamps=torch.from_numpy(_pad(times, width, np.float64)) if times else None,
            targets=torch.from_numpy(_pad(targets, width, np.int64)),
            users=torch.from_numpy(np.asarray(chunk, dtype=np.int64)),
        )


def eval_batches(split: Split, which: str, max_len: int, batch_size: int,
                 users: np.ndarray | None = None) -> Iterator[Batch]:
    """One row per user: the last `max_len` events of the input history and the held-out target."""
    store = split.store
    users = np.arange(store.n_users) if users is None else users
    all_targets = split.targets(which)
    for start in range(0, len(users), batch_size):
        chunk = users[start: start + batch_size]
        inputs, seen, times = [], [], []
        for user in chunk:
            begin, end = int(store.offsets[user]), split.prefix_end(which, int(user))
            seen.append(store.items[begin:end])
            window = max(begin, end - max_len)
            inputs.append(store.items[window:end])
            if store.timestamps is not None:
                times.append(store.timestamps[window:end])
        width = max(len(r) for r in inputs)
        yield Batch(
            items=torch.from_numpy(_pad(inputs, width, np.int64)),
            lengths=torch.tensor([len(r) for r in inputs]),
            timestamps=torch.from_numpy(_pad(times, width, np.float64)) if times else None,
            targets=torch.from_numpy(all_targets[chunk]),
            seen=torch.from_numpy(_pad(seen, max(len(r) for r in seen), np.int64)),
            users=torch.from_numpy(np.asarray(chunk, dtype=np.int64)),
        )
