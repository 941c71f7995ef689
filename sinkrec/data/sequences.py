"""Compact per-user sequence store, the leave-one-out split, and its on-disk cache.

The store is CSR-like: `offsets[u]:offsets[u+1]` slices `items` (and `timestamps`) for user u.
Item index 0 is padding; `item_ids[i]` is the original id of item i (a str: the user's exact
token), so results can be reported in the user's own ids. `user_ids` are str tokens too. Both are
IdLists (one UTF-8 blob + offsets), so a single long id does not widen every other one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, DataFormatError
from ..hashing import file_digest
from .formats import Interactions, note, read_interactions
from .ids import IdList

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # 3: ids as UTF-8 blob + offsets; 2: fixed-width str arrays; 1: integer ids
ID_ARRAYS = ("user_ids", "item_ids")


@dataclass
class SequenceStore:
    offsets: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int32 [n_events], 1..n_items
    timestamps: np.ndarray | None  # float64 [n_events] or None
    user_ids: IdList  # original user id (str) per user index
    item_ids: IdList  # original item id (str) per item index; [0] is "" (padding)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ID_ARRAYS:  # a list or str array given by a caller becomes an IdList
            if not isinstance(getattr(self, name), IdList):
                setattr(self, name, IdList(getattr(self, name)))

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
    def decode_items(self, indices: np.ndarray) -> list[str]:
        """Indices → original ids as plain Python strings."""
        return [self.item_ids[int(i)] for i in indices]

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(offsets=self.offsets, items=self.items, notes=np.asarray(self.notes, dtype=str))
        for name in ID_ARRAYS:
            ids = getattr(self, name)
            arrays[f"{name}_blob"], arrays[f"{name}_offsets"] = ids.blob, ids.offsets
        if self.timestamps is not None:
            arrays["timestamps"] = self.timestamps
        # a private temporary name per process: runs started together may build the same cache
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SequenceStore:
        with np.load(path, allow_pickle=False) as data:
            ids = {name: IdList.from_arrays(data[f"{name}_blob"], data[f"{name}_offsets"]) for name in ID_ARRAYS}
            return cls(offsets=data["offsets"], items=data["items"],
                       timestamps=data["timestamps"] if "timestamps" in data else None,
                       notes=[str(n) for n in data["notes"]], **ids)


def _canonical_int(token: str) -> int | None:
    """The integer a token spells exactly (`7`, `-3`; not `007`, `+7`, `7.0`), else None."""
    try:
        value = int(token)
    except ValueError:
        return None
    return value if str(value) == token else None


def keep_rated(events: Interactions, threshold: float) -> Interactions:
    """Only events rated ≥ threshold (data.min_rating: implicit feedback from explicit ratings)."""
    if events.ratings is None:
        raise DataError(f"{events.source}: data.min_rating is set but the file has no rating column (map one "
                        "with data.columns.rating, or leave data.min_rating empty)")
    keep = events.ratings >= threshold
    out = events.select(keep)
    if (~keep).any():
        note(out.notes, events.source, f"min_rating {threshold:g}: dropped {int((~keep).sum())} of {len(keep)} events")
    return out


def id_order(vocab: list[str]) -> np.ndarray:
    """The order of `vocab` (distinct ids) in the store: numeric when every id is a plain integer.

    Re-indexed files (items 1..n) so keep index == id, matching earlier integer-id stores; any other
    set is sorted as Python strings (code points). Only index assignment depends on this, never
    event order.
    """
    values = [_canonical_int(token) for token in vocab]
    key = values.__getitem__ if vocab and all(v is not None for v in values) else vocab.__getitem__
    return np.asarray(sorted(range(len(vocab)), key=key), dtype=np.int64)


def _ranks(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _in_order(user_index: np.ndarray, times: np.ndarray | None, step: int = 1 << 18) -> bool:
    """Whether events are grouped by user already, each history in time order (no sort needed).

    Checked a slice at a time, so the comparisons' temporaries stay small next to the events.
    """
    for start in range(0, max(len(user_index) - 1, 0), step):
        users = user_index[start:start + step + 1]
        if (users[1:] < users[:-1]).any():
            return False
        if times is not None:
            ts = times[start:start + step + 1]
            if ((users[1:] == users[:-1]) & ~(ts[1:] >= ts[:-1])).any():  # a NaN sorts as before
                return False
    return True


def build_store(events: Interactions, min_events: int = 3) -> SequenceStore:
    """Group events by user, order each history stably by (timestamp, file order), remap ids.

    Works on the events' id codes: the only strings handled are the distinct ids.
    """
    if min_events < 1:
        raise ValueError("min_events must be ≥ 1")
    user_order = id_order(events.user_vocab)
    user_index = events.user_codes  # codes are in id order already when ids are 1, 2, … in file order
    if (user_order != np.arange(len(user_order))).any():
        user_index = _ranks(user_order).astype(np.int32)[user_index]
    raw_items, times = events.item_codes, events.timestamps
    # stable sorts, by time then by user, so ties keep file order; none for a file already in that order
    if not _in_order(user_index, times):
        order = None if times is None else np.argsort(times, kind="stable")
        by_user = np.argsort(user_index if order is None else user_index[order], kind="stable")
        order = by_user if order is None else order[by_user]
        del by_user
        user_index, raw_items = user_index[order], raw_items[order]
        times = None if times is None else times[order]
        del order

    # user_index is sorted now: counts from its run boundaries (bincount would copy it as int64)
    bounds = np.arange(len(user_order) + 1, dtype=user_index.dtype)
    counts = np.diff(np.searchsorted(user_index, bounds)).astype(np.int64)
    keep_user = counts >= min_events
    notes = list(events.notes)
    dropped = int((~keep_user).sum())
    if dropped:
        note(notes, events.source, f"dropped {dropped} user(s) with fewer than {min_events} events "
                                   f"({int(counts[~keep_user].sum())} events)")
        keep_event = keep_user[user_index]
        raw_items = raw_items[keep_event]
        times = None if times is None else times[keep_event]
    del user_index
    counts = counts[keep_user]
    if counts.size == 0:
        raise DataError(f"{events.source}: no user has at least {min_events} events "
                        f"({len(user_order)} user(s) in the file); nothing to train on")

    seen = np.zeros(len(events.item_vocab), dtype=bool)  # not bincount: it copies the codes as int64
    seen[raw_items] = True
    present = np.flatnonzero(seen)
    vocab = [events.item_vocab[code] for code in present.tolist()]
    item_order = id_order(vocab)
    if len(vocab) < 2:
        raise DataError(f"{events.source}: only one distinct item ({vocab[0]!r}) is left; "
                        "there is nothing to rank")
    index_of = np.zeros(len(events.item_vocab), dtype=np.int32)  # item code → store index (1-based)
    index_of[present[item_order]] = np.arange(1, len(vocab) + 1, dtype=np.int32)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    kept_users = user_order[keep_user].tolist()
    return SequenceStore(
        offsets=offsets,
        items=index_of[raw_items],
        timestamps=times,
        user_ids=IdList(events.user_vocab[code] for code in kept_users),
        item_ids=IdList([""] + [vocab[i] for i in item_order.tolist()]),
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
        lengths = self.store.lengths
        short = int((lengths < 3).sum())
        if short:
            raise DataError(f"{short} user(s) have fewer than 3 events, but the leave-one-out split needs "
                            "3 (train, validation, test): set data.min_events ≥ 3")
        if not (lengths >= 4).any():
            raise DataError(f"no user has more than {int(lengths.max())} events: after holding out the last "
                            "two for validation and test, no (input, next item) pair is left to train on; "
                            "at least one user needs 4 or more events")

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


def _load_cached(path: Path) -> SequenceStore | None:
    """A cached store, or None when it is unreadable (it is rebuilt).

    Older layouts are never read: CACHE_VERSION is part of the file name's key.
    """
    try:
        return SequenceStore.load(path)
    except Exception as exc:  # a damaged cache must never stop a run: it is only a cache
        log.warning("ignoring unreadable cache %s (%s: %s)", path, type(exc).__name__, exc)
        return None


def load_store(path: str | Path, fmt: str = "auto", columns: dict[str, str] | None = None,
               min_events: int = 3, use_cache: bool = True, min_rating: float | None = None) -> SequenceStore:
    """Read + build a store, cached on disk by the file's checksum and the options.

    `min_rating` drops lower-rated events before the store is built (sinkrec.data.filters).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    options = {"format": fmt, "columns": columns or {}, "min_events": min_events, "version": CACHE_VERSION}
    if min_rating is not None:
        options["min_rating"] = min_rating
    options = json.dumps(options, sort_keys=True)
    key = hashlib.sha256((file_digest(path) + options).encode()).hexdigest()[:20]
    cached = cache_dir() / "stores" / f"{path.name}-{key}.npz"
    store = _load_cached(cached) if use_cache and cached.is_file() else None
    if store is not None:
        log.info("loaded cached store %s", cached)
        for message in store.notes:  # a fresh build logs its notes as it makes them
            log.warning("%s: %s", path.name, message)
        return store
    events = read_interactions(path, fmt, columns)
    if min_rating is not None:
        events = keep_rated(events, min_rating)
    store = build_store(events, min_events)
    if use_cache:
        store.save(cached)
    return store
