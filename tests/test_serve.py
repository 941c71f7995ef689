"""Serving engine and stores, in process: exact state (incremental = replay = rebuild), idempotency,
checkpoint changes, and the safe state format. SQLite always; Redis when SINKREC_TEST_REDIS is set
(under CI it must be: .ci/run starts a redis-server)."""

from __future__ import annotations

import json
import os
import random
import struct
import uuid

import pytest
import torch

from sinkrec.errors import SinkrecError, UnknownItemError
from sinkrec.models import build_model
from sinkrec.recommend import Recommender
from sinkrec.serve import Engine, Event, EventConflict, SQLiteStore, UnknownUserError
from sinkrec.serve import state as codec

MODELS = ["gdn", "sinkrec", "sasrec", "sessa"]


def tiny_recommender(name: str, seed: int = 0, n_items: int = 40, max_len: int = 12) -> Recommender:
    """An untrained model with deterministic weights (no checkpoint file needed)."""
    torch.manual_seed(seed)
    model = build_model({"name": name, "d_model": 16, "dropout": 0.0}, n_items, max_len)
    return Recommender(model, [""] + [f"i{n}" for n in range(1, n_items + 1)], max_len)


def redis_url(db: int = 0) -> str:
    url = os.environ.get("SINKREC_TEST_REDIS")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("SINKREC_TEST_REDIS is unset under CI: .ci/run must start a redis-server")
        pytest.skip("set SINKREC_TEST_REDIS=redis://127.0.0.1:PORT/0 to run the Redis tests")
    return url.rsplit("/", 1)[0] + f"/{db}"


def make_store(kind: str, tmp_path):
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "state.db")
    from sinkrec.serve.redis_store import RedisStore

    return RedisStore(redis_url(), prefix=f"test-{uuid.uuid4().hex[:8]}")


def random_events(n: int, users: int = 3, seed: int = 0, n_items: int = 40) -> list[Event]:
    rng = random.Random(seed)
    return [Event(f"u{rng.randrange(users)}", f"i{rng.randint(1, n_items)}", 1_000.0 + 60 * i + rng.random(),
                  f"e{i}") for i in range(n)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """As the server runs: a per-event step is tiny, and two threads on two busy cores crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    s = make_store(request.param, tmp_path)
    yield s
    if request.param == "redis":
        s.clear()
    s.close()


@pytest.mark.parametrize("name", MODELS)
def test_incremental_state_equals_replay_and_rebuild(name, store):
    engine = Engine(tiny_recommender(name), store)
    events = random_events(40)
    i = 0
    while i < len(events):  # uneven batches, each followed by a retry of part of it
        size = random.Random(i).randint(1, 7)
        engine.record(events[i:i + size])
        assert engine.record(events[i:i + 2]).recorded == 0
        i += size
    for user in ("u0", "u1", "u2"):
        log = store.events(user)
        assert [e.event_id for e in log] == [e.event_id for e in events if e.user == user]
        incremental = codec.dumps(engine.state(user))
        assert incremental == codec.dumps(engine.replay(log))  # bit for bit
        by_history = engine.recommend(history=[e.item for e in log], timestamps=[e.timestamp for e in log], k=5)
        assert engine.recommend(user=user, k=5) == by_history
    assert engine.rebuild() == 3
    assert all(codec.dumps(engine.state(u)) == codec.dumps(engine.replay(store.events(u))) for u in ("u0", "u1"))
    assert store.count_users() == 3


def test_retries_are_idempotent_and_conflicts_rejected(store):
    engine = Engine(tiny_recommender("gdn"), store)
    first = [Event("u", "i1", 1.0, "a"), Event("u", "i2", 2.0, "b")]
    assert engine.record(first).recorded == 2
    again = engine.record(first + [Event("u", "i3", 3.0, "c"), Event("u", "i3", 3.0, "c")])
    assert (again.recorded, again.duplicates) == (1, 3)
    with pytest.raises(EventConflict, match="event_id 'a'"):
        engine.record([Event("u", "i9", 1.0, "a")])
    assert engine.user_info("u")["events"] == 3
    assert Engine(tiny_recommender("gdn"), store).record([Event("v", "i1", 1.0, "a")]).recorded == 1  # per user


def test_unknown_item_rejects_the_whole_call(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    with pytest.raises(UnknownItemError, match="#2 'nope'"):
        engine.record([Event("u", "i1", 1.0, "a"), Event("u", "nope", 2.0, "b")])
    with pytest.raises(UnknownUserError):
        engine.recommend(user="u")
    with pytest.raises(UnknownItemError):
        engine.recommend(history=["i1", "zzz"])


def test_new_checkpoint_rebuilds_stale_states_from_the_log(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    old = Engine(tiny_recommender("sinkrec", seed=0), store)
    old.record(random_events(25, users=2))
    new = Engine(tiny_recommender("sinkrec", seed=1), store)
    assert new.checkpoint != old.checkpoint
    state = new.state("u0")  # refreshed lazily, and stored
    assert state.checkpoint == new.checkpoint
    assert codec.dumps(state) == codec.dumps(new.replay(store.events("u0")))
    assert codec.loads(store.load("u0")).checkpoint == new.checkpoint
    assert new.rebuild() == 2 and codec.loads(store.load("u1")).checkpoint == new.checkpoint


def test_filter_seen_exclude_and_k(tmp_path):
    engine = Engine(tiny_recommender("gdn", n_items=10), SQLiteStore(tmp_path / "s.db"))
    engine.record([Event("u", f"i{n}", float(n), f"e{n}") for n in (1, 2, 3)])
    out = engine.recommend(user="u", k=100, exclude=["i4", "unknown-id"])
    assert len(out["items"]) == 6 and not {"i1", "i2", "i3", "i4"} & set(out["items"])
    assert out["scores"] == sorted(out["scores"], reverse=True)
    assert len(engine.recommend(user="u", k=100, filter_seen=False)["items"]) == 10
    with pytest.raises(SinkrecError, match="k must be"):
        engine.recommend(user="u", k=0)


def test_state_format_is_exact_and_never_unpickles(tmp_path):
    engine = Engine(tiny_recommender("sinkrec"), SQLiteStore(tmp_path / "s.db"))
    engine.record(random_events(10, users=1))
    blob = engine.store.load("u0")
    assert codec.dumps(codec.loads(blob)) == blob and blob[:8] == codec.MAGIC
    size = struct.unpack_from("<I", blob, 8)[0]
    header = json.loads(blob[12:12 + size])
    header["state"]["cache"] = {"$c": "posix.system", "fields": {}}  # only whitelisted cache classes
    forged = json.dumps(header).encode()
    with pytest.raises(codec.StateFormatError, match="unknown cache type"):
        codec.loads(blob[:8] + struct.pack("<I", len(forged)) + forged + blob[12 + size:])
    with pytest.raises(codec.StateFormatError):
        codec.loads(blob[:-3])
    engine.store._conn().execute("UPDATE states SET blob = ?", (b"garbage",))  # unreadable: rebuilt from the log
    assert codec.dumps(engine.state("u0")) == codec.dumps(engine.replay(engine.store.events("u0")))


def test_model_work_in_another_thread_uses_the_process_thread_count(tmp_path, monkeypatch):
    """OpenMP's thread count is per OS thread: the engine sets it in each thread that runs the model."""
    import threading

    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append((threading.get_ident(), n)), real(n)))
    worker = threading.Thread(target=lambda: engine.record(random_events(5)))
    worker.start()
    worker.join()
    assert (worker.ident, engine.threads) in calls


def test_in_memory_sqlite_is_refused_as_a_store():
    """Every thread would open its own empty database there: acknowledged events would vanish."""
    from sinkrec.errors import SinkrecError
    from sinkrec.serve.open_store import open_store

    with pytest.raises(SinkrecError, match="in-memory SQLite"):
        open_store("sqlite:///:memory:")
