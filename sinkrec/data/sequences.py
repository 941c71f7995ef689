"""Compact per-user sequence store, the leave-one-out split, and its on-disk cache.

The store is CSR-like: `offsets[u]:offsets[u+1]` slices `items` (and `timestamps`) for user u.
Item index 0 is padding; `item_ids[i]` is the original id of item i, so results can be reported
in the user's own ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataFormatError
from .formats import Interactions, read_interactions

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass
class SequenceStore:
    offsets: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int32 [n_events], 1..n_items
    timestamps: np.ndarray | None  # float64 [n_events] or None
    user_ids: np.ndarray  # original user id per user index
    item_ids: np.ndarray  # original item id per item index; [0] is a placeholder for padding
    notes: list[str] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        """Catalogue size without padding (valid item indices are 1..n_items)."""
        return len(self.item_ids) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user]: self.offsets[user + 1]]

    def times(self, user: int) -> np.ndarray | None:
        if self.timestamps is None:
            return None
        return self.timestamps[self.offsets[user]: self.offsets[user + 1]]

    # ---- id mapping -------------------------------------------------------------------
    def decode_items(self, indices: np.ndarray) -> list:
        """Indices → original ids as plain Python values (numpy scalars unwrapped)."""
        return [self.item_ids[int(i)].item() for i in indices]

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(offsets=self.offsets, items=self.items, user_ids=self.user_ids,
                      item_ids=self.item_ids, notes=np.asarray(self.notes, dtype=str))
        if self.timestamps is not None:
            arrays["timestamps"] = self.timestamps
        # a private temporary name per process: runs started together may build the same cache
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SequenceStore:
        with np.load(path, allow_pickle=False) as data:
            return cls(offsets=data["offsets"], items=data["items"],
                       timestamps=data["timestamps"] if "timestamps" in data else None,
                       user_ids=data["user_ids"], item_ids=data["item_ids"],
                       notes=[str(n) for n in data["notes"]])


def build_store(events: Interactions, min_events: int = 3) -> SequenceStore:
    """Group events by user, order each history stably by (timestamp, file order), remap ids."""
    if min_events < 1:
        raise ValueError("min_events must be ≥ 1")
    user_ids, user_index = np.unique(events.users, return_inverse=True)
    file_order = np.arange(len(events))
    if events.timestamps is not None:
        order = np.lexsort((file_order, events.timestamps, user_index))
    else:
        order = np.lexsort((file_order, user_index))
    user_index = user_index[order]
    raw_items = events.items[order]
    times = None if events.timestamps is None else events.timestamps[order]

    counts = np.bincount(user_index, minlength=len(user_ids))
    keep_user = counts >= min_events
    notes = list(events.notes)
    dropped = int((~keep_user).sum())
    if dropped:
        notes.append(f"dropped {dropped} user(s) with fewer than {min_events} events "
                     f"({int(counts[~keep_user].sum())} events)")
    keep_event = keep_user[user_index]
    raw_items = raw_items[keep_event]
    times = None if times is None else times[keep_event]
    counts = counts[keep_user]
    if counts.size == 0:
        raise DataFormatError(events.source, None,
                              f"no user has at least {min_events} events; nothing to train on")

    item_ids, item_index = np.unique(raw_items, return_inverse=True)
    placeholder = np.zeros(1, dtype=item_ids.dtype) if item_ids.dtype.kind in "iu" else np.array([""])
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return SequenceStore(
        offsets=offsets,
        items=(item_index + 1).astype(np.int32),
        timestamps=times,
        user_ids=user_ids[keep_user],
        item_ids=np.concatenate([placeholder, item_ids]),
        notes=notes,
    )


# ---- leave-one-out split ---------------------------------------------------------------
@dataclass
class Split:
    """Leave-one-out view of a store (DESIGN.md): last = test, second-to-last = validation.

    Training sequences are x_1..x_{n-2}; validation input is the same prefix with target
    x_{n-1}; test input is x_1..x_{n-1} with target x_n. Targets never enter training input.
    """

    store: SequenceStore

    def __post_init__(self) -> None:
        short = int((self.store.lengths < 3).sum())
        if short:
            raise ValueError(f"{short} users have fewer than 3 events; build the store with min_events ≥ 3")

    def train_end(self, user: int) -> int:
        return int(self.store.offsets[user + 1]) - 2

    def prefix_end(self, split: str, user: int) -> int:
        """Exclusive end (into store.items) of the input history for `split`."""
        end = int(self.store.offsets[user + 1])
        if split == "valid":
            return end - 2
        if split == "test":
            return end - 1
        raise ValueError(f"split must be 'valid' or 'test', got '{split}'")

    def targets(self, split: str) -> np.ndarray:
        ends = self.store.offsets[1:]
        return self.store.items[ends - (2 if split == "valid" else 1)].astype(np.int64)


# ---- cache -----------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("SINKREC_CACHE", Path.home() / ".cache" / "sinkrec"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_store(path: str | Path, fmt: str = "auto", columns: dict[str, str] | None = None,
               min_events: int = 3, use_cache: bool = True) -> SequenceStore:
    """Read + build a store, cached on disk by the file's checksum and the options."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    options = json.dumps({"format": fmt, "columns": columns or {}, "min_events": min_events,
                          "version": CACHE_VERSION}, sort_keys=True)
    key = hashlib.sha256((file_sha256(path) + options).encode()).hexdigest()[:20]
    cached = cache_dir() / "stores" / f"{path.name}-{key}.npz"
    if use_cache and cached.is_file():
        store = SequenceStore.load(cached)
        log.info("loaded cached store %s", cached)
    else:
        store = build_store(read_interactions(path, fmt, columns), min_events)
        if use_cache:
            store.save(cached)
    for note in store.notes:
        log.warning("%s: %s", path.name, note)
    return store
