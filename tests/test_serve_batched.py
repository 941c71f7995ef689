"""All users of a call share their model steps (row steps) and the stored states are still byte for byte
replays of their logs (GDN and SinkRec, both stores); and the Redis store computing each user's state
once per update, however many times WATCH makes it retry."""

from __future__ import annotations

import random

import pytest

from sinkrec.serve import Engine, Event
from sinkrec.serve import state as codec

from .test_serve import _one_thread, make_store, random_events, redis_url, tiny_recommender  # noqa: F401
from .test_serve_fused import _randomise


@pytest.mark.parametrize("name", ["gdn", "sinkrec"])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_users_of_a_call_share_steps_and_states_equal_replays(name, kind, tmp_path):
    rec = tiny_recommender(name)
    if name == "sinkrec":
        _randomise(rec.model, seed=7)  # every path live (an untrained SinkRec's memory is a no-op)
    engine = Engine(rec, make_store(kind, tmp_path))
    rows, sizes = engine.rows, []
    engine.rows = lambda caches, items, whens: (sizes.append(len(items)), rows(caches, items, whens))[1]
    events = random_events(120, users=9)
    i = 0
    while i < len(events):  # uneven multi-user calls: new users, users with several events per call
        size = random.Random(i).randint(1, 24)
        assert engine.record(events[i:i + size]).recorded == len(events[i:i + size])
        i += size
    assert max(sizes) > 1 and len(sizes) < len(events)  # really stepped together
    for user in sorted({e.user for e in events}):
        log = engine.store.events(user)
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(log))
        assert engine.recommend(user=user, k=5)["items"]
    if kind == "redis":
        engine.store.clear()


def test_redis_retry_reuses_computed_states(tmp_path):
    """A WATCH conflict on one user's keys makes EXEC fail; the retry finds both states unchanged and
    writes what was computed, without running the model again."""
    import redis

    from sinkrec.serve.redis_store import RedisStore

    store = RedisStore(redis_url(), prefix="test-memo-" + random.Random().randbytes(4).hex())
    engine = Engine(tiny_recommender("gdn"), store)
    engine.record(random_events(6, users=2))
    other = redis.Redis.from_url(redis_url())
    steps, step = [], engine._step()

    def interfering(old, fresh, read_log):
        steps.append(len(fresh))
        if len(steps) == 1:  # between the WATCH and the EXEC: another process touches u1's id index
            other.hset(store._keys("u1")[1], "unrelated", "[\"i1\", 0.0]")
        return step(old, fresh, read_log)

    fresh = [Event("u0", "i3", 9e6, "n0"), Event("u1", "i4", 9e6, "n1")]
    before = store.computed
    result = store.update_many([("u0", fresh[:1]), ("u1", fresh[1:])], interfering)
    assert [len(r[0]) for r in result] == [1, 1]
    assert len(steps) == 2 and store.computed - before == 2  # once per user, not once per attempt
    for user in ("u0", "u1"):
        log = [e for e in store.events(user)]
        assert log[-1].event_id in ("n0", "n1")
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(log))
    store.clear()


def test_waves_keep_each_users_calls_in_order():
    from sinkrec.serve.redis_store import waves

    def call(*users):
        return [(user, []) for user in users]

    assert waves([call("a"), call("b"), call("a", "c"), call("c"), call("d")]) == [[0, 1, 4], [2], [3]]
    assert waves([]) == []


def test_redis_runs_a_group_of_calls_in_few_transactions_and_a_conflict_fails_alone(tmp_path):
    """The HTTP pipeline's group: calls sharing no user in one transaction, a user's calls in order,
    an event_id conflict answered to its own call only; every state still a replay of its log."""
    from sinkrec.errors import SinkrecError

    engine = Engine(tiny_recommender("gdn"), make_store("redis", tmp_path))
    engine.record([Event("u0", "i1", 1.0, "a")])
    transactions = []
    run = engine.store._transaction
    engine.store._transaction = lambda calls, results: (transactions.append(len(calls)), run(calls, results))[1]
    calls = [[Event("u0", "i2", 2.0, "b")], [Event("u1", "i3", 2.0, "c"), Event("u2", "i4", 2.0, "d")],
             [Event("u0", "i5", 3.0, "a")],  # 'a' of u0 is taken by another event: this call alone fails
             [Event("u0", "i6", 4.0, "e")], [Event("u3", "i7", 1.0, "f")]]
    results = engine.record_calls([(events, None) for events in calls])
    assert [r.recorded if not isinstance(r, BaseException) else type(r).__name__ for r in results] == \
        [1, 2, "EventConflict", 1, 1]
    assert isinstance(results[2], SinkrecError)
    assert transactions == [3, 1, 1]  # u0's three calls in turn, the others with the first
    assert [e.event_id for e in engine.store.events("u0")] == ["a", "b", "e"]
    for user in engine.store.users():
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(engine.store.events(user)))
    engine.store.clear()


def test_redis_retry_of_a_planned_group_reuses_its_states_and_leaves_a_failed_call_out(tmp_path):
    """Another process writes a watched key between WATCH and EXEC of a group of three calls (one with an
    event_id conflict): the retry reuses the two computed states (the engine's planned row steps), the
    failed call writes nothing, the others land once."""
    import redis

    engine = Engine(tiny_recommender("gdn"), make_store("redis", tmp_path))
    store, other = engine.store, redis.Redis.from_url(redis_url())
    engine.record([Event("u0", "i1", 1.0, "a"), Event("u1", "i2", 1.0, "b"), Event("u2", "i3", 1.0, "x")])
    compute, computed = store._compute, []

    def interfering(live, found, memo, results):
        writes = compute(live, found, memo, results)
        computed.append(store.computed)
        if len(computed) == 1:  # after the reads, before the EXEC
            other.hset(store._keys("u1")[1], "unrelated", "[\"i1\", 0.0]")
        return writes

    store._compute = interfering
    before = store.computed
    results = engine.record_calls([([Event("u0", "i4", 2.0, "n0")], None), ([Event("u1", "i5", 2.0, "n1")], None),
                                   ([Event("u2", "i6", 2.0, "x")], None)])
    assert [type(r).__name__ for r in results] == ["RecordResult", "RecordResult", "EventConflict"]
    assert computed == [before + 2, before + 2]  # two attempts; the retry computed nothing again
    assert [[e.event_id for e in store.events(u)] for u in ("u0", "u1", "u2")] == [["a", "n0"], ["b", "n1"], ["x"]]
    for user in ("u0", "u1", "u2"):
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(store.events(user)))
    store.clear()


def test_redis_failure_reading_a_log_is_store_unavailable(tmp_path):
    """A new user's update reads its log; Redis failing there answers StoreUnavailable (a 503), not a raw error."""
    import redis

    from sinkrec.serve import StoreUnavailable

    engine = Engine(tiny_recommender("gdn"), make_store("redis", tmp_path))

    def down(*args, **kwargs):
        raise redis.exceptions.ConnectionError("connection refused")

    engine.store.client.lrange = down
    results = engine.record_calls([([Event("new", "i1", 1.0, "a")], None)])
    assert isinstance(results[0], StoreUnavailable) and "Redis at" in str(results[0])
    del engine.store.client.lrange
    engine.store.clear()
