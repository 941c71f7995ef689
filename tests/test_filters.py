"""Data options applied before the split: k-core to a fixed point, dedup, min rating, temporal cut."""

import numpy as np
import pytest

from sinkrec.config import DataConfig
from sinkrec.data import filters
from sinkrec.data.formats import Interactions
from sinkrec.data.sequences import Split, build_store
from sinkrec.errors import DataError


def store_of(histories, times=None):
    users = [str(u) for u, h in enumerate(histories) for _ in h]
    items = [str(i) for h in histories for i in h]
    ts = None if times is None else np.asarray([t for h in times for t in h], dtype=float)
    return build_store(Interactions(np.asarray(users), np.asarray(items), ts, "test"), min_events=1)


def test_k_core_iterates_to_a_fixed_point():
    # a chain: item 9 goes (2 uses), so user 2 goes, so item 8 falls to 2 uses, so user 3 goes
    histories = [[1, 2, 3, 1, 2, 3], [1, 2, 3, 2, 1, 3], [8, 9, 9], [8, 8, 1, 2]]
    out = filters.k_core(store_of(histories), k=3, min_events=3)
    assert out.item_ids.tolist() == ["", "1", "2", "3"] and out.user_ids.tolist() == ["0", "1"]
    assert "4 round(s)" in out.notes[-1]
    counts = np.bincount(out.items, minlength=out.n_items + 1)[1:]
    assert counts.min() >= 3 and out.lengths.min() >= 3


def test_dedup_collapses_consecutive_repeats_within_a_user_only():
    out = filters.dedup_repeats(store_of([[1, 1, 2, 2, 1], [1, 3, 3]]))
    assert out.decode_items(out.sequence(0)) == ["1", "2", "1"]
    assert out.decode_items(out.sequence(1)) == ["1", "3"]
    assert "dropped 3" in out.notes[-1]


def test_min_rating_needs_ratings_and_counts_what_it_drops():
    events = Interactions(np.asarray(["a", "a", "b"]), np.asarray(["1", "2", "3"]), None, "f",
                          ratings=np.asarray([5.0, 2.0, 4.0]))
    kept = filters.min_rating(events, 4)
    assert kept.items.tolist() == ["1", "3"] and "dropped 1 of 3" in kept.notes[-1]
    with pytest.raises(DataError, match="no rating column"):
        filters.min_rating(Interactions(events.users, events.items, None, "f"), 4)


def test_temporal_split_lays_out_first_window_events_as_targets():
    histories = [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [1, 2]]
    times = [[1, 2, 6, 7, 11], [1, 5, 6, 12, 13], [1, 2]]
    store = filters.apply(store_of(histories, times), DataConfig(split="temporal", split_times=[5, 10],
                                                                 min_events=3))
    assert store.n_users == 2 and "1 dropped" in store.notes[-1]
    split = Split(store)
    assert store.decode_items(split.targets("valid")) == ["3", "3"]
    assert store.decode_items(split.targets("test")) == ["5", "5"]
    assert store.decode_items(store.sequence(1)) == ["2", "3", "5"]  # trains on events before t1 only


def test_temporal_split_needs_timestamps():
    with pytest.raises(DataError, match="timestamps"):
        filters.temporal(store_of([[1, 2, 3]]), [0.5, 0.9])
