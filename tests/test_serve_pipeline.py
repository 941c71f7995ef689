"""The events pipeline (pipeline.py: one thread runs the event loop's calls in groups) and the engine's
`record_calls` under it: each call keeps its own answer and its own transaction, whatever it is grouped with."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sinkrec.errors import UnknownItemError
from sinkrec.serve import Engine, Event, EventConflict, SQLiteStore
from sinkrec.serve import state as codec
from sinkrec.serve.pipeline import Pipeline

from .test_serve import _one_thread, make_store, tiny_recommender  # noqa: F401 - fixture


def test_pipeline_runs_queued_items_as_one_group_and_routes_each_answer():
    gate, seen = threading.Event(), []

    def run(items):
        seen.append(list(items))
        if items == ["first"]:
            gate.wait(5)  # the others queue up meanwhile
        return [ValueError(i) if i.startswith("bad") else i.upper() for i in items]

    pipeline = Pipeline(run)

    async def main():
        first = asyncio.ensure_future(pipeline.submit("first"))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(pipeline.submit(i)) for i in ("a", "bad-b", "c")]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    answers = asyncio.run(main())
    pipeline.close()
    assert seen == [["first"], ["a", "bad-b", "c"]]
    assert answers[0] == "FIRST" and answers[1] == "A" and answers[3] == "C"
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "bad-b"
    assert (pipeline.groups, pipeline.items) == (2, 4)


def test_pipeline_survives_a_failing_group_and_a_cancelled_caller():
    calls = []

    def run(items):
        calls.append(items)
        if "boom" in items:
            raise RuntimeError("group failed")
        return items

    pipeline = Pipeline(run)

    async def main():
        with pytest.raises(RuntimeError, match="group failed"):
            await pipeline.submit("boom")
        waiting = asyncio.ensure_future(pipeline.submit("x"))
        waiting.cancel()
        await asyncio.sleep(0.05)
        return await pipeline.submit("after")

    assert asyncio.run(main()) == "after"
    pipeline.close()
    assert calls[0] == ["boom"]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_record_calls_keep_each_call_its_own(kind, tmp_path):
    """A group of calls: an unknown item and an event_id conflict fail their own call only; the others are
    recorded, and every state equals a replay of its log, byte for byte."""
    engine = Engine(tiny_recommender("gdn"), make_store(kind, tmp_path))
    engine.record([Event("u0", "i1", 1.0, "taken")])
    calls = [
        ([Event("u0", "i2", 2.0, "a"), Event("u1", "i3", 2.0, "b")], None),
        ([Event("u2", "nope", 2.0, "c")], None),  # unknown item
        ([Event("u1", "i4", 3.0, "d"), Event("u0", "i9", 3.0, "taken")], None),  # conflict: the whole call goes
        ([Event("u0", "i2", 2.0, "a")], None),  # a duplicate of the first call's event
        ([Event("u3", "i5", 4.0, "e")], None),
    ]
    out = engine.record_calls(calls)
    assert isinstance(out[1], UnknownItemError) and isinstance(out[2], EventConflict)
    assert (out[0].recorded, out[0].duplicates) == (2, 0)
    assert (out[3].recorded, out[3].duplicates) == (0, 1)
    assert (out[4].recorded, out[4].duplicates) == (1, 0)
    assert [e.event_id for e in engine.store.events("u1")] == ["b"]  # "d" was rolled back with its call
    assert [e.event_id for e in engine.store.events("u0")] == ["taken", "a"]
    for user in ("u0", "u1", "u3"):
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(engine.store.events(user)))
    if kind == "redis":
        engine.store.clear()


def test_record_calls_group_equals_one_by_one(tmp_path):
    """The same calls recorded as one group and one at a time store the same bytes."""
    calls = [([Event(f"u{n % 5}", f"i{1 + (7 * n) % 40}", float(n), f"e{n}")], None) for n in range(30)]
    grouped = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "g.db"))
    alone = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "a.db"))
    for start in range(0, 30, 10):
        assert all(r.recorded == 1 for r in grouped.record_calls(calls[start:start + 10]))
    for events, _ in calls:
        alone.record(events)
    for user in (f"u{n}" for n in range(5)):
        assert grouped.store.load(user) == alone.store.load(user)
