import numpy as np
import pytest

from sinkrec.data.batching import eval_batches, train_batches, trainable_users
from sinkrec.data.formats import Interactions
from sinkrec.data.sequences import Split, build_store
from sinkrec.errors import DataError


def make_store(lengths, with_time=False, min_events=3, seed=0):
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u, n in enumerate(lengths):
        users += [u + 100] * n
        items += list(rng.integers(1, 40, size=n) * 7)
        times += list(np.sort(rng.integers(0, 5, size=n)).astype(float))
    order = rng.permutation(len(users))  # file order is shuffled; timestamps define order
    ev = Interactions(np.asarray(users)[order], np.asarray(items)[order],
                      np.asarray(times)[order] if with_time else None, "test")
    return build_store(ev, min_events)


def test_short_users_dropped_and_counted():
    store = make_store([2, 3, 1, 5])
    assert store.n_users == 2
    assert any("dropped 2 user(s)" in note for note in store.notes)


def test_no_user_left_is_an_error():
    with pytest.raises(DataError, match="no user has at least 3"):
        make_store([1, 2])


def test_stable_order_by_time_then_file_order():
    ev = Interactions(np.array([1, 1, 1, 1]), np.array([10, 20, 30, 40]), np.array([5.0, 1.0, 5.0, 1.0]), "t")
    store = build_store(ev, 1)
    # times 1,1,5,5 → file order breaks ties: 20, 40, 10, 30 (ids remapped, decode to check)
    assert store.decode_items(store.sequence(0)) == ["20", "40", "10", "30"]


def test_targets_never_reach_training_input():
    store = make_store([3, 4, 10, 250, 7], with_time=True)
    split = Split(store)
    valid, test = split.targets("valid"), split.targets("test")
    seen_train = {}
    for batch in train_batches(split, trainable_users(split), max_len=50, batch_size=2,
                               rng=np.random.default_rng(1)):
        for row, user in enumerate(batch.users.tolist()):
            n = int(batch.lengths[row])
            seq = store.sequence(user)
            # inputs + last target are exactly the tail of x_1..x_{n-2}
            got = list(batch.items[row, :n].tolist()) + [int(batch.targets[row, n - 1])]
            assert got == seq[:-2][-(n + 1):].tolist()
            assert (batch.targets[row, n:] == 0).all() and (batch.items[row, n:] == 0).all()
            seen_train[user] = n
    assert 0 not in seen_train  # the 3-event user has one training event: no pair to learn
    assert seen_train[3] == 50  # long user truncated to max_len
    for which, targets, cut in (("valid", valid, 2), ("test", test, 1)):
        for batch in eval_batches(split, which, max_len=50, batch_size=3):
            for row, user in enumerate(batch.users.tolist()):
                seq = store.sequence(user)
                n = int(batch.lengths[row])
                assert batch.items[row, :n].tolist() == seq[:-cut][-50:].tolist()
                assert int(batch.targets[row]) == targets[user] == seq[-cut]
                assert batch.seen[row][batch.seen[row] > 0].tolist() == seq[:-cut].tolist()


def test_three_event_user():
    store = make_store([3, 4])
    split = Split(store)
    seq = store.sequence(0)
    assert split.targets("valid")[0] == seq[1] and split.targets("test")[0] == seq[2]
    batch = next(eval_batches(split, "test", 10, 4))
    assert batch.items[0, :2].tolist() == seq[:2].tolist() and int(batch.lengths[0]) == 2


def test_every_user_with_three_events_is_refused_at_split_time():
    """3 events each leave one training event per user: no pair to train on (was a KeyError later)."""
    with pytest.raises(DataError, match="no .input, next item. pair is left to train on"):
        Split(make_store([3, 3, 3]))


def test_short_users_in_a_store_are_a_data_error():
    store = make_store([2, 5], min_events=1)
    with pytest.raises(DataError, match="1 user.s. have fewer than 3 events.*min_events"):
        Split(store)


def test_a_single_item_is_refused():
    ev = Interactions(np.array(["u", "u", "v"]), np.array(["x", "x", "x"]), None, "one.txt")
    with pytest.raises(DataError, match=r"one.txt: only one distinct item \('x'\)"):
        build_store(ev, 1)


def test_ids_are_strings_and_integer_like_ones_keep_numeric_index_order():
    ev = Interactions(np.array([10, 9, 10, 9]), np.array([12, 3, 100, 3]), None, "synthetic")
    store = build_store(ev, 1)
    assert store.user_ids.tolist() == ["9", "10"] and store.item_ids.tolist() == ["", "3", "12", "100"]
    ev = Interactions(np.array(["a", "a", "a"]), np.array(["7", "007", "7.0"]), None, "t")
    store = build_store(ev, 1)
    assert store.n_items == 3 and store.decode_items(store.sequence(0)) == ["7", "007", "7.0"]


def _save_many(args):
    store, path, times = args
    for _ in range(times):
        store.save(path)


def test_concurrent_saves_of_one_cache(tmp_path):
    """Runs started together build the same cache file; none may fail and the file stays readable."""
    import multiprocessing

    from sinkrec.data.sequences import SequenceStore

    store = make_store([5, 7, 3], with_time=True)
    path = tmp_path / "store.npz"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_save_many, [(store, path, 40)] * 4)
    loaded = SequenceStore.load(path)
    assert np.array_equal(loaded.items, store.items) and np.array_equal(loaded.timestamps, store.timestamps)
    assert [p.name for p in tmp_path.iterdir()] == ["store.npz"]  # no temporary file left behind
