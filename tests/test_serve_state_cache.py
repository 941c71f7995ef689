"""The decoded-state cache (state_cache.py) against no cache, its reference: the same stored bytes and
recommendations for every model, and never a stale state when another engine (process) wrote a user."""

from __future__ import annotations

import random

import pytest

from sinkrec.serve import Engine, Event, SQLiteStore, StoreUnavailable
from sinkrec.serve.state_cache import StateCache

from .test_serve import MODELS, _one_thread, random_events, tiny_recommender  # noqa: F401 - fixture


def stored(engine: Engine) -> dict:
    return {user: engine.store.load(user) for user in engine.store.users()}


@pytest.mark.parametrize("name", MODELS)
def test_cached_states_answer_like_decoded_ones(name, tmp_path):
    engines = {cache: Engine(tiny_recommender(name), SQLiteStore(tmp_path / f"{cache}.db"),
                             state_cache_bytes=cache) for cache in (1 << 24, 0)}
    events, i = random_events(60, users=4), 0
    while i < len(events):
        size = random.Random(i).randint(1, 5)
        for engine in engines.values():
            engine.record(events[i:i + size])
            if i % 2:
                engine.recommend(user=events[i].user, k=5)  # a recommend between updates puts the state back
        i += size
        cached, plain = (stored(e) for e in engines.values())
        assert cached == plain
    for user in engines[0].store.users():
        assert engines[1 << 24].recommend(user=user, k=7) == engines[0].recommend(user=user, k=7)
    assert engines[1 << 24].states.hits > 0 and engines[0].states.hits == 0


def test_a_write_by_another_process_is_never_read_stale(tmp_path):
    """Two engines over one file, as two worker processes: each sees the other's writes."""
    a, b = (Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db")) for _ in range(2))
    reference = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "r.db"), state_cache_bytes=0)
    for n, event in enumerate(random_events(30, users=2)):
        (a if random.Random(n).random() < 0.5 else b).record([event])
        reference.record([event])
        assert a.recommend(user=event.user, k=5) == b.recommend(user=event.user, k=5) == \
            reference.recommend(user=event.user, k=5)
    assert stored(a) == stored(reference)


class FailingWrite(SQLiteStore):
    """Fails the write transaction of the next call after its state was computed, once."""

    fail = False

    def _write(self, conn, *args):
        if self.fail:
            self.fail = False
            raise StoreUnavailable("injected")
        return super()._write(conn, *args)


def test_a_rolled_back_update_leaves_no_state_behind(tmp_path):
    engine = Engine(tiny_recommender("gdn"), FailingWrite(tmp_path / "s.db"))
    reference = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "r.db"), state_cache_bytes=0)
    for e in (engine, reference):
        e.record([Event("u0", "i1", 1.0, "e1")])
    engine.store.fail = True
    with pytest.raises(StoreUnavailable):  # stepped and kept in the cache, then rolled back
        engine.record([Event("u0", "i2", 2.0, "e2")])
    for e in (engine, reference):
        e.record([Event("u0", "i4", 4.0, "e3")])
    assert stored(engine) == stored(reference) and engine.states.misses > 0


def test_cache_is_bounded_and_takes_only_equal_bytes():
    from sinkrec.serve.state import UserState

    cache = StateCache(max_bytes=100)
    state = UserState(checkpoint="c")
    cache.put("u", b"x" * 30, state)
    assert cache.take("u", b"y" * 30) is None and cache.take("u", b"x" * 30) is None  # gone with the miss
    cache.put("u", b"x" * 30, state)
    assert cache.take("u", b"x" * 30) is state and cache.take("u", b"x" * 30) is None  # taken out
    for n in range(5):
        cache.put(f"v{n}", b"z" * 20, state)
    assert cache.size <= 100 and cache.take("v0", b"z" * 20) is None and cache.take("v4", b"z" * 20) is state
