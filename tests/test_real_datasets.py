"""Catalogue datasets found the way a user's own copies are (SINKREC_DATA_PATH, set by conftest
when the research datasets are on this machine); skipped where they are absent."""

import pytest

from sinkrec.config import DataConfig
from sinkrec.data import load_dataset
from sinkrec.data.catalog import CATALOG, local_copy


@pytest.mark.parametrize("name, users, items, events, timed", [
    ("ml-1m-sasrec", 6040, 3416, 999611, False),
    ("ml-100k", 943, 1682, 100000, True),  # found as RecBole's ml-100k.inter, read with its own reader
    ("beauty", 22363, 12101, 198502, False),
    ("lastfm", 1090, 3646, 52551, False),
    ("ml-1m-ts-half", 2999, 3615, 487650, True),
])
def test_catalogue_dataset_counts(name, users, items, events, timed):
    if local_copy(CATALOG[name]) is None:
        pytest.skip(f"{name} is not on this machine (set SINKREC_DATA_PATH to a folder holding it)")
    store = load_dataset(DataConfig(dataset=name)).store
    assert (store.n_users, store.n_items, len(store.items)) == (users, items, events)
    assert (store.timestamps is not None) == timed
