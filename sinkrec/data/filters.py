"""Data options applied before the split: rating threshold, repeat dedup, k-core, temporal cut.

Each step records what it removed in the store's notes (logged, shown with the dataset summary),
so no event disappears silently. Order: min rating (on the raw events) → dedup → k-core → the
global temporal cut (which then leaves the usual one validation and one test target per user).
"""

from __future__ import annotations

import logging

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .formats import note
from .sequences import SequenceStore
from .sequences import keep_rated as min_rating  # noqa: F401  (one step of the pipeline)

log = logging.getLogger(__name__)


def subset(store: SequenceStore, keep: np.ndarray) -> SequenceStore:
    """The events where `keep` is true; users left empty vanish and item indices are compacted."""
    user_of = np.repeat(np.arange(store.n_users), store.lengths)
    counts = np.bincount(user_of[keep], minlength=store.n_users)
    users = counts > 0
    present = np.zeros(store.n_items + 1, dtype=bool)
    present[store.items[keep]] = True
    present[0] = True
    remap = np.cumsum(present) - 1  # old index → new index; 0 stays padding
    offsets = np.zeros(int(users.sum()) + 1, dtype=np.int64)
    np.cumsum(counts[users], out=offsets[1:])
    return SequenceStore(offsets=offsets, items=remap[store.items[keep]].astype(np.int32),
                         timestamps=None if store.timestamps is None else store.timestamps[keep],
                         user_ids=store.user_ids[users], item_ids=store.item_ids[present], notes=list(store.notes))


def dedup_repeats(store: SequenceStore) -> SequenceStore:
    """Collapse runs of one item in a user's history (a, a, b → a, b); the first event of a run stays."""
    first = np.ones(len(store.items), dtype=bool)
    first[1:] = store.items[1:] != store.items[:-1]
    first[store.offsets[:-1]] = True  # a user's first event is never a repeat of another user's last
    out = subset(store, first)
    if (~first).any():
        note(out.notes, "data", f"dedup_repeats: dropped {int((~first).sum())} consecutive repeat event(s)")
    return out


def k_core(store: SequenceStore, k: int, min_events: int) -> SequenceStore:
    """Drop users and items with fewer than k events, repeatedly, until nothing changes."""
    keep = np.ones(len(store.items), dtype=bool)
    user_of = np.repeat(np.arange(store.n_users), store.lengths)
    rounds = 0
    while True:
        item_counts = np.bincount(store.items[keep], minlength=store.n_items + 1)
        user_counts = np.bincount(user_of[keep], minlength=store.n_users)
        drop = keep & ((item_counts[store.items] < k) | (user_counts[user_of] < max(k, min_events)))
        if not drop.any():
            break
        keep &= ~drop
        rounds += 1
    if not keep.any():
        raise DataError(f"data.k_core {k}: no user and item survive (try a smaller k)")
    out = subset(store, keep)
    note(out.notes, "data", f"k_core {k}: {rounds} round(s) to a fixed point; dropped "
                            f"{int((~keep).sum())} events, {store.n_users - out.n_users} users, "
                            f"{store.n_items - out.n_items} items", logging.INFO if keep.all() else logging.WARNING)
    return out


def cut_times(store: SequenceStore, times: list[float]) -> tuple[float, float]:
    if store.timestamps is None:
        raise DataError("data.split 'temporal' needs timestamps, and this data has none (use leave-one-out)")
    if len(times) != 2 or not times[0] < times[1]:
        raise DataError(f"data.split_times must be two increasing values [t1, t2], got {times}")
    if all(0 < t < 1 for t in times):
        t1, t2 = np.quantile(store.timestamps, times)
        return float(t1), float(t2)
    return float(times[0]), float(times[1])


def temporal(store: SequenceStore, times: list[float]) -> SequenceStore:
    """A global temporal split laid out for the leave-one-out view.

    Events before t1 are training; a user's first event in [t1, t2) is the validation target
    and the first at or after t2 the test target (its input: the training events and the
    validation target). Later window events are unused, and users without a training event,
    a validation target and a test target are dropped: both are counted in the notes.
    """
    t1, t2 = cut_times(store, times)
    keep = store.timestamps < t1
    kept_users, dropped = 0, 0
    for user in range(store.n_users):
        begin, end = int(store.offsets[user]), int(store.offsets[user + 1])
        ts = store.timestamps[begin:end]
        valid = np.flatnonzero((ts >= t1) & (ts < t2))
        test = np.flatnonzero(ts >= t2)
        if not keep[begin:end].any() or not len(valid) or not len(test):
            keep[begin:end] = False
            dropped += 1
            continue
        keep[begin + valid[0]] = keep[begin + test[0]] = True
        kept_users += 1
    if not kept_users:
        raise DataError(f"data.split temporal at t1={t1:.0f}, t2={t2:.0f}: no user has events before t1, "
                        "in [t1, t2) and after t2")
    unused = int(len(keep) - keep.sum())
    out = subset(store, keep)
    note(out.notes, "data", f"temporal split t1={t1:.0f}, t2={t2:.0f}: {kept_users} users evaluated, {dropped} "
                            f"dropped (no training, validation or test event); {unused} events after each "
                            "user's first validation/test event unused")
    return out


def apply(store: SequenceStore, cfg: DataConfig) -> SequenceStore:
    """Dedup, k-core and the temporal cut, per `cfg`; then users below min_events are dropped again."""
    if cfg.dedup_repeats:
        store = dedup_repeats(store)
    if cfg.k_core > 1:
        store = k_core(store, cfg.k_core, cfg.min_events)
    if cfg.split == "temporal":
        store = temporal(store, cfg.split_times)
    short = store.lengths < cfg.min_events
    if short.any():
        before = store
        store = subset(store, ~np.repeat(short, store.lengths))
        note(store.notes, "data", f"dropped {int(short.sum())} user(s) left with fewer than {cfg.min_events} "
                                  f"events after filtering ({int(before.lengths[short].sum())} events)")
    return store
