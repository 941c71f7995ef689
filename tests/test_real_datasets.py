"""Readers on the shared research datasets (skipped where ../shared/datasets is absent)."""

import pytest

from sinkrec.data import load_store

from .conftest import shared_file


@pytest.mark.parametrize("relative, users, items, events, timed", [
    ("ml-1m-sasrec/ml-1m.txt", 6040, 3416, 999611, False),
    ("ml-100k/ml-100k.inter", 943, 1682, 100000, True),
    ("amazon-beauty-s3rec/Beauty.txt", 22363, 12101, 198502, False),
    ("lastfm-s3rec/LastFM.txt", 1090, 3646, 52551, False),
    ("ml-1m-ts-half/ratings.dat.gz", 2999, 3615, 487650, True),
])
def test_shared_dataset_counts(relative, users, items, events, timed):
    store = load_store(shared_file(relative))
    assert (store.n_users, store.n_items, len(store.items)) == (users, items, events)
    assert (store.timestamps is not None) == timed
