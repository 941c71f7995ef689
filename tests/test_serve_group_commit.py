"""Group commit: one transaction per call whatever the number of users, concurrent calls sharing a
commit, a failing call rolled back alone, and everything acknowledged still durable and exact."""

from __future__ import annotations

import threading
import time

import pytest

from sinkrec.serve import Engine, Event, EventConflict, SQLiteStore
from sinkrec.serve import state as codec

from .test_serve import _one_thread, make_store, random_events, tiny_recommender  # noqa: F401 - fixture


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_many_users_in_one_call_is_one_transaction(kind, tmp_path):
    store = make_store(kind, tmp_path)
    try:
        engine = Engine(tiny_recommender("gdn"), store)
        events = random_events(120, users=40)
        before = store.commits if kind == "sqlite" else None
        result = engine.record(events)
        assert (result.recorded, result.duplicates) == (120, 0)
        if kind == "sqlite":
            assert store.commits == before + 1
        assert store.count_users() == len({e.user for e in events}) > 30
        for user in {e.user for e in events}:
            assert [e.event_id for e in store.events(user)] == [e.event_id for e in events if e.user == user]
            assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(store.events(user)))
        # a conflict anywhere in a call keeps nothing of the call, for every user in it
        bad = [Event("new-user", "i1", 1.0, "n1"), Event(events[0].user, "i2" if events[0].item != "i2" else "i3",
                                                          events[0].timestamp, events[0].event_id)]
        with pytest.raises(EventConflict):
            engine.record(bad)
        assert store.load("new-user") is None and store.events("new-user") == []
    finally:
        if kind == "redis":
            store.clear()
        store.close()


def test_concurrent_calls_share_commits_and_are_all_durable(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    engine = Engine(tiny_recommender("sinkrec"), store)
    gate, entered = threading.Event(), threading.Event()

    def hold(conn):  # occupies the committer so that the next calls queue into one group
        entered.set()
        gate.wait(10)

    holder = threading.Thread(target=store._committer.submit, args=(hold,))
    holder.start()
    entered.wait(10)
    calls = [[Event(f"u{c}", f"i{(c * 7 + j) % 40 + 1}", 10.0 * j, f"c{c}-{j}") for j in range(3)]
             + [Event("shared", f"i{c % 40 + 1}", 1000.0 + c, f"s{c}")] for c in range(12)]
    calls[5].append(Event("u0", "i1", 0.0, "c0-0"))  # a retry of another call's event, same group
    results: dict[int, object] = {}

    def post(c):
        results[c] = engine.record(calls[c])

    threads = [threading.Thread(target=post, args=(c,)) for c in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.time() + 10
    while store._committer.pending() < len(calls) and time.time() < deadline:
        time.sleep(0.01)
    commits = store.commits
    gate.set()
    for t in threads + [holder]:
        t.join(20)
    assert store.commits - commits == 2  # the holder's group, then one group for all 12 calls
    assert sum(r.recorded for r in results.values()) == 12 * 4 and sum(r.duplicates for r in results.values()) == 1
    store.close()

    reopened = Engine(tiny_recommender("sinkrec"), SQLiteStore(path))  # what is on disk
    assert len(reopened.store.events("shared")) == 12
    for user in [f"u{c}" for c in range(12)] + ["shared"]:
        log = reopened.store.events(user)
        assert codec.dumps(reopened.state(user)) == codec.dumps(reopened.replay(log))
    assert {e.event_id for c in calls for e in c} == {e.event_id for u in reopened.store.users()
                                                      for e in reopened.store.events(u)}


def test_a_failing_call_in_a_group_is_rolled_back_alone(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    engine = Engine(tiny_recommender("gdn"), store)
    engine.record([Event("u", "i1", 1.0, "a")])
    gate, entered = threading.Event(), threading.Event()
    holder = threading.Thread(target=store._committer.submit, args=(lambda conn: (entered.set(), gate.wait(10)),))
    holder.start()
    entered.wait(10)
    outcomes = {}

    def post(name, events):
        try:
            outcomes[name] = engine.record(events).recorded
        except EventConflict:
            outcomes[name] = "conflict"

    # both calls pass the snapshot check (event "c" is new to it); the conflict appears only when the
    # group writes "bad" after "good", so it is the savepoint that must undo "bad" — its user "w" too
    good = threading.Thread(target=post, args=("good", [Event("v", "i2", 2.0, "b"), Event("u", "i3", 3.0, "c")]))
    bad = threading.Thread(target=post, args=("bad", [Event("w", "i4", 4.0, "d"), Event("u", "i9", 5.0, "c")]))
    for n, thread in enumerate((good, bad), start=1):
        thread.start()
        deadline = time.time() + 10
        while store._committer.pending() < n and time.time() < deadline:
            time.sleep(0.01)
    commits = store.commits
    gate.set()
    for t in (good, bad, holder):
        t.join(20)
    assert store.commits - commits == 2
    assert outcomes == {"good": 2, "bad": "conflict"}
    assert [e.event_id for e in store.events("u")] == ["a", "c"] and store.events("w") == []
    assert codec.dumps(engine.state("u")) == codec.dumps(engine.replay(store.events("u")))


def test_synchronous_normal_is_an_explicit_option(tmp_path):
    assert SQLiteStore(tmp_path / "a.db").synchronous == "FULL"
    conn = SQLiteStore(tmp_path / "a.db")._connect()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert SQLiteStore(tmp_path / "b.db", synchronous="normal")._connect().execute(
        "PRAGMA synchronous").fetchone()[0] == 1


def test_a_lone_call_commits_in_its_own_thread(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    assert store._committer.submit(lambda conn: threading.get_ident()) == threading.get_ident()
    store.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="POSIX file locks")
def test_write_transactions_hold_the_file_lock_that_other_processes_wait_on(tmp_path):
    import fcntl
    import os

    store = SQLiteStore(tmp_path / "s.db")
    Engine(tiny_recommender("gdn"), store).record(random_events(3))
    other = os.open(f"{tmp_path / 's.db'}-writer.lock", os.O_RDWR)  # another open file: as another process

    def try_lock() -> bool:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(other, fcntl.LOCK_UN)
        return True

    assert store._committer.submit(lambda conn: try_lock()) is False  # held during the transaction
    assert try_lock()  # and released after it
    os.close(other)
    store.close()


def test_wal_is_emptied_once_past_its_limit(tmp_path):
    """A WAL that grew past `wal_limit` (here: while a reader held an old snapshot, as the workers' steady
    reads did) is emptied by the checkpointer, with every event and state kept; a PASSIVE checkpoint alone
    never shrinks the file (it stayed at its largest, and under steady load kept growing: 1.7 GB in 30 s)."""
    import os
    import time

    from sinkrec.serve import Engine, Event, SQLiteStore

    from .test_serve import tiny_recommender

    store = SQLiteStore(tmp_path / "w.db", checkpoint_every=0.02, wal_limit=256 << 10)
    engine = Engine(tiny_recommender("gdn"), store)
    engine.record([Event("u0", "i1", 0.0, "first")])
    reader = store._connect()
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()  # holds its snapshot: nothing can be reset
    for n in range(600):
        engine.record([Event(f"u{n % 50}", f"i{1 + n % 40}", float(n), f"e{n}")])
    grown = os.path.getsize(f"{store.path}-wal")
    reader.execute("ROLLBACK")
    deadline = time.monotonic() + 10
    while store.truncations == 0 and time.monotonic() < deadline:
        engine.record([Event("u0", "i2", 1.0, f"after-{time.monotonic()}")])
    assert grown > 4 * store.wal_limit and store.truncations > 0
    assert os.path.getsize(f"{store.path}-wal") < store.wal_limit
    assert len(store.events("u3")) == 12 and engine.state("u3").n_events == 12
    store.close()
