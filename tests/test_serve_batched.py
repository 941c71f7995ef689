"""Batched model steps (one step for all users of a call) against one-by-one steps, in float64 (GDN: bit
for bit; SinkRec with `batch_steps`: to 1e-12); and the
Redis store computing each user's state once per update, however many times WATCH makes it retry."""

from __future__ import annotations

import random

import pytest
import torch

from sinkrec.serve import Engine, Event, SQLiteStore
from sinkrec.serve import state as codec
from sinkrec.serve.batched import stack, unstack

from .test_serve import _one_thread, make_store, random_events, redis_url, tiny_recommender  # noqa: F401


def double(name: str):
    rec = tiny_recommender(name)
    rec.model.double()
    return rec


def tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for f in value.__dataclass_fields__ for t in tensors(getattr(value, f))]
    return []


@pytest.mark.parametrize("name", ["gdn", "sinkrec"])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_batched_steps_equal_sequential_steps_in_float64(name, kind, tmp_path):
    one = Engine(double(name), SQLiteStore(tmp_path / "one.db"))
    many = Engine(double(name), make_store(kind, tmp_path), batch_steps=True)
    calls = []
    original = many.model.encode_step

    def counted(items, cache, timestamps=None):
        calls.append(items.shape[0])
        return original(items, cache, timestamps)

    many.model.encode_step = counted
    if name == "gdn":  # the batch-invariant row step, shared with concurrent calls (step_batcher.py)
        rows = many.rows
        many.rows = lambda caches, items: (calls.append(len(items)), rows(caches, items))[1]
    events = random_events(120, users=9)
    i = 0
    while i < len(events):  # uneven multi-user calls: new users, users with several events per call
        size = random.Random(i).randint(1, 24)
        assert one.record(events[i:i + size]).recorded == many.record(events[i:i + size]).recorded
        i += size
    assert max(calls) > 1  # really batched
    assert len(calls) < len(events)
    for user in sorted({e.user for e in events}):
        a, b = one.state(user), many.state(user)
        assert a.n_events == b.n_events and a.seen == b.seen
        pairs = list(zip(tensors(a.cache), tensors(b.cache)))
        assert pairs and all(x.dtype == y.dtype and x.shape == y.shape for x, y in pairs)
        floats = [(x, y) for x, y in pairs if x.is_floating_point()]
        assert floats and all(x.dtype == torch.float64 for x, _ in floats)
        assert max((x - y).abs().max().item() for x, y in floats) <= 1e-12
        if name == "gdn":  # row steps: bit for bit, batched or not
            assert all(torch.equal(x, y) for x, y in pairs) and torch.equal(a.hidden, b.hidden)
            assert codec.dumps(a) == codec.dumps(b)
        assert all(torch.equal(x, y) for x, y in pairs if not x.is_floating_point())
        assert torch.allclose(a.hidden, b.hidden, atol=1e-6)
        assert one.recommend(user=user, k=5)["items"] == many.recommend(user=user, k=5)["items"]
        # the state still round-trips through the store's format exactly
        assert codec.loads(codec.dumps(b)).n_events == b.n_events


def test_stack_and_unstack_are_inverse():
    model = tiny_recommender("sinkrec").model.eval()
    caches = [model.new_cache() for _ in range(3)]
    with torch.inference_mode():
        for n, cache in enumerate(caches):
            for t in range(3):
                model.encode_step(torch.tensor([[1 + n + t]]), cache, torch.tensor([[60.0 * t]], dtype=torch.float64))
    both = stack(caches)
    for n, cache in enumerate(caches):
        back = unstack(both, n)
        assert all(torch.equal(x, y) for x, y in zip(tensors(cache), tensors(back)))


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
