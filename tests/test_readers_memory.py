"""Readers intern ids: memory follows the events and the distinct ids, not rows × the longest id."""

import tracemalloc

from sinkrec.data.formats import read_interactions
from sinkrec.data.sequences import build_store


def test_one_long_id_does_not_widen_every_row(tmp_path):
    rows = 200_000
    path = tmp_path / "events.txt"
    long_id = "x" * 500
    lines = [f"{n // 50} {n % 300}" for n in range(rows)]
    lines[7] = f"0 {long_id}"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        events = read_interactions(path)
        read_peak = tracemalloc.get_traced_memory()[1]
        store = build_store(events, min_events=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one fixed-width string per row would be rows × 500 chars × 4 bytes = 400 MB
    assert read_peak < 40 << 20 and peak < 60 << 20, (read_peak, peak)
    assert len(events) == rows and events.items[7] == long_id and events.users[-1] == str((rows - 1) // 50)
    assert store.decode_items(store.sequence(0))[7] == long_id


def test_one_long_id_does_not_widen_the_stores_ids(tmp_path):
    """Distinct ids cost their own bytes: not 4 bytes × the longest id each, in memory or in the cache."""
    import numpy as np

    from sinkrec.data.formats import Interactions
    from sinkrec.data.sequences import SequenceStore

    n = 100_000  # users with two events each, over 5,001 items; user 0 and item 0 have a 500-char id
    long_id = "y" * 500
    user_vocab = [long_id] + [f"u{k}" for k in range(1, n)]
    item_vocab = [long_id] + [f"i{k}" for k in range(1, 5001)]
    events = Interactions.from_codes(np.repeat(np.arange(n, dtype=np.int32), 2), user_vocab,
                                     np.arange(2 * n, dtype=np.int32) % 5001, item_vocab, None, "test")
    tracemalloc.start()
    try:
        store = build_store(events, min_events=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # fixed-width ids would hold n × 500 chars × 4 bytes = 200 MB for the users alone
    assert store.user_ids.nbytes < 3 << 20 and store.item_ids.nbytes < 1 << 20, store.user_ids.nbytes
    assert peak < 40 << 20, peak
    assert long_id in store.user_ids and store.user_ids[store.user_ids.index("u7")] == "u7"
    assert store.decode_items(store.sequence(store.user_ids.index(long_id))) == [long_id, "i1"]
    path = tmp_path / "store.npz"
    store.save(path)
    assert path.stat().st_size < 8 << 20
    loaded = SequenceStore.load(path)
    assert loaded.user_ids.tolist() == store.user_ids.tolist() and loaded.item_ids.tolist() == store.item_ids.tolist()


def test_a_line_without_end_is_refused_before_it_is_held_whole(tmp_path, monkeypatch):
    import pytest

    from sinkrec.data.formats import lines
    from sinkrec.errors import DataFormatError

    monkeypatch.setattr(lines, "CHUNK", 1 << 10)
    monkeypatch.setenv("SINKREC_MAX_LINE_BYTES", str(1 << 16))
    path = tmp_path / "events.txt"
    path.write_text("u1 i1\nu1 i2\n" + "x" * (1 << 20))  # 1 MiB with no line break
    with pytest.raises(DataFormatError, match=r"line 3: longer than 65536 bytes") as info:
        read_interactions(path, "sasrec")
    assert len(str(info.value)) < 300
    path.write_text("u1 i1\nu1 " + "i" * 60_000 + "\n")  # long, but under the limit
    assert read_interactions(path, "sasrec").items[1] == "i" * 60_000
