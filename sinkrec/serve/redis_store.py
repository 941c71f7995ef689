"""Redis store: several server processes (or machines) share user state through one Redis.

Per user (keys share a `{user}` hash tag, so a Redis Cluster keeps them on one shard):
    PREFIX:{user}:log    list of [event_id, item, timestamp] JSON, in arrival order
    PREFIX:{user}:ids    hash event_id -> [item, timestamp] (idempotency and conflict check)
    PREFIX:{user}:state  the state bytes (state.py)
and PREFIX:users, the set of users. An update is optimistic: WATCH the user's keys, compute the
state in Python (the model runs here, not in Lua), then MULTI/EXEC; a concurrent writer makes EXEC
fail and the update is retried on the new state. Within one process a user is updated by one
thread at a time (striped locks), so WATCH only ever fails because of another process; and a retry
recomputes only the users whose state actually changed (the others reuse their computed state).
Durability is Redis's: run it with `appendonly yes` and `appendfsync always` for an acknowledged
event to survive a power loss.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import zlib
from collections.abc import Iterator
from contextlib import ExitStack

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .stores import Event, Step, Store, StoreUnavailable, split_new

log = logging.getLogger("sinkrec.serve")
ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
          redis.exceptions.ReadOnlyError, redis.exceptions.ClusterDownError)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def waves(batches: list[list[tuple[str, list[Event]]]]) -> list[list[int]]:
    """The calls (by index) in groups that share no user, each call after every earlier call of its users."""
    out: list[list[int]] = []
    wave_of: dict[str, int] = {}  # user -> the wave of its latest call
    for n, batch in enumerate(batches):
        wave = max((wave_of[user] + 1 for user, _ in batch if user in wave_of), default=0)
        if wave == len(out):
            out.append([])
        out[wave].append(n)
        wave_of.update((user, wave) for user, _ in batch)
    return out


class RedisStore(Store):
    kind = "redis"

    def __init__(self, url: str, prefix: str = "sinkrec", max_retries: int = 50):
        self.url, self.prefix, self.max_retries = url, prefix, max_retries
        self.shown_url = re.sub(r"//[^@/]*@", "//***@", url)  # for messages: never the password
        self._stripes = [threading.Lock() for _ in range(64)]  # per-user locks within this process
        self.computed = 0  # states computed by `step` (a retry that reuses one does not count)
        # Fail fast when Redis is down: the client gets a 503 and retries, a request never hangs.
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=1,
                                           retry=Retry(NoBackoff(), 0), health_check_interval=10)
        try:
            config = {_text(k): _text(v) for k, v in self.client.config_get("append*").items()}
            if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
                log.warning("Redis at %s runs without appendonly yes + appendfsync always: an acknowledged "
                            "event can be lost if Redis itself dies", url)
        except redis.exceptions.RedisError:
            pass  # CONFIG may be disabled (managed Redis) or Redis not up yet; serving still works

    def _keys(self, user: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:{{{user}}}"
        return f"{base}:log", f"{base}:ids", f"{base}:state"

    def update_many(self, batch: list[tuple[str, list[Event]]], step: Step) -> list[tuple[list[Event], int]]:
        """All users of a call in one optimistic transaction (see `update_calls`)."""
        result = self.update_calls([(batch, step)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def update_calls(self, calls: list[tuple[list[tuple[str, list[Event]]], Step]]) -> list:
        """Several independent calls (the HTTP pipeline's group) in as few transactions as their users
        allow: calls that share no user go in one (`waves`), so a group of one-event calls costs one
        WATCH, one pipelined read and one MULTI/EXEC (one AOF fsync with `appendfsync always`) instead of
        one each. Each call's result, or its error: a conflict or the deadline fails that call alone; a
        Redis failure fails the calls of its transaction."""
        results: list = [None] * len(calls)
        for wave in waves([batch for batch, _ in calls]):
            try:
                self._transaction([(n, *calls[n]) for n in wave], results)
            except Exception as exc:  # noqa: BLE001 - nothing of this transaction was written
                for n in wave:
                    if not isinstance(results[n], BaseException):  # a call's own error stands
                        results[n] = exc
        return results

    def _transaction(self, calls: list[tuple[int, list, Step]], results: list) -> None:
        """WATCH every user's keys, read them in one pipelined round trip, compute the states (the row
        steps of all calls together), then one MULTI/EXEC; retried when another process wrote one of
        those users first, reusing every state whose input has not changed."""
        users = [user for _, batch, _ in calls for user, _ in batch]
        keys = {user: self._keys(user) for user in users}
        stripes = sorted({zlib.crc32(user.encode()) % len(self._stripes) for user in users})
        memo: dict[str, tuple] = {}  # user -> (old state, event ids, new state): reused on a retry
        try:
            with ExitStack() as held, self.client.pipeline() as pipe:
                for n in stripes:  # in order: two calls never wait on each other's stripes
                    held.enter_context(self._stripes[n])
                for _ in range(self.max_retries):
                    live = [(n, batch, step) for n, batch, step in calls if results[n] is None]
                    pipe.watch(*[k for user in users for k in keys[user][1:]])
                    reads = self.client.pipeline(transaction=False)  # after WATCH: a later write aborts EXEC
                    for _, batch, _ in live:
                        for user, events in batch:
                            if events:
                                reads.hmget(keys[user][1], [e.event_id for e in events])
                            reads.get(keys[user][2])
                    answers = iter(reads.execute())
                    found = [[(next(answers) if events else [], next(answers)) for _, events in batch]
                             for _, batch, _ in live]
                    writes = self._compute(live, found, memo, results)
                    if not writes:
                        pipe.unwatch()
                        return
                    pipe.multi()
                    for user, fresh, blob in writes:
                        log_key, ids_key, state_key = keys[user]
                        if fresh:
                            pipe.rpush(log_key, *[json.dumps([e.event_id, e.item, float(e.timestamp)]) for e in fresh])
                            pipe.hset(ids_key, mapping={e.event_id: json.dumps([e.item, float(e.timestamp)])
                                                        for e in fresh})
                            pipe.sadd(f"{self.prefix}:users", user)
                        if blob is not None:
                            pipe.set(state_key, blob)
                    try:
                        pipe.execute()
                    except redis.exceptions.WatchError:
                        for n, _, _ in live:
                            if not isinstance(results[n], BaseException):
                                results[n] = None  # computed, not written: redo
                        continue
                    return
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis at {self.shown_url}: {exc}") from None
        shown = ", ".join(f"'{u}'" for u in users[:3])
        raise StoreUnavailable(f"user {shown}: {self.max_retries} concurrent updates in a row, try again")

    def _compute(self, live: list[tuple[int, list, Step]], found: list[list[tuple]], memo: dict,
                 results: list) -> list[tuple[str, list[Event], bytes | None]]:
        """Each live call's new states from what was read (its result, or its error, into `results`);
        the writes of the calls that succeeded. Calls whose step can be planned (`task`, `plan`: the
        engine's row steps) share their model steps, with each other and with other threads' calls."""
        plans = []  # (n, [(user, fresh, duplicates)], todo entries, step)
        for (n, batch, step), reads in zip(live, found):
            try:
                rows, todo = [], []
                for (user, events), (ids_found, old) in zip(batch, reads):
                    known = {e.event_id: tuple(json.loads(v)) for e, v in zip(events, ids_found) if v is not None}
                    fresh, duplicates = split_new(user, events, known)
                    rows.append((user, old, fresh, duplicates))
                    ids = [e.event_id for e in fresh]
                    if not (user in memo and memo[user][:2] == (old, ids)):
                        todo.append((user, old, fresh, ids))
                plans.append((n, rows, todo, step))
            except Exception as exc:  # noqa: BLE001 - an event_id conflict: this call only
                results[n] = exc
        entries = {n: [(old, fresh, lambda user=user: self.events(user)) for user, old, fresh, _ in todo]
                   for n, _, todo, _ in plans}
        blobs, tasks, planners = {}, {}, {}
        for n, _, todo, step in plans:
            try:
                if getattr(step, "task", None) is not None and todo:  # planned below, all calls at once
                    tasks[n] = step.task(entries[n])
                    planners.setdefault(step.plan, []).append(tasks[n])
                elif getattr(step, "many", None) is not None and len(todo) > 1:
                    blobs[n] = step.many(entries[n])
                else:
                    blobs[n] = [step(*entry) for entry in entries[n]]
            except Exception as exc:  # noqa: BLE001 - this call only (the deadline, an unreadable log)
                results[n] = exc
        for plan, group in planners.items():
            plan(group)
        for n, task in tasks.items():
            results[n], blobs[n] = task.error, task.result
        writes = []
        for n, rows, todo, _ in plans:
            if results[n] is not None:
                continue
            for (user, old, _, ids), blob in zip(todo, blobs[n]):
                memo[user] = (old, ids, blob)
            self.computed += len(todo)
            results[n] = [(fresh, duplicates) for _, _, fresh, duplicates in rows]
            writes += [(user, fresh, memo[user][2]) for user, _, fresh, _ in rows]
        return [w for w in writes if w[1] or w[2] is not None]

    @staticmethod
    def _decode_log(user: str, rows: list[bytes]) -> list[Event]:
        out = []
        for row in rows:
            event_id, item, ts = json.loads(row)
            out.append(Event(user, item, ts, event_id))
        return out

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis at {self.shown_url}: {exc}") from None

    def load(self, user: str) -> bytes | None:
        return self._call(self.client.get, self._keys(user)[2])

    def events(self, user: str) -> list[Event]:
        return self._decode_log(user, self._call(self.client.lrange, self._keys(user)[0], 0, -1))

    def users(self) -> Iterator[str]:
        members = self._call(self.client.smembers, f"{self.prefix}:users")
        yield from sorted(m.decode() for m in members)

    def count_users(self) -> int:
        return int(self._call(self.client.scard, f"{self.prefix}:users"))

    def ping(self) -> None:
        self._call(self.client.ping)

    def clear(self) -> None:
        """Delete every key of this prefix (tests and benchmarks start from an empty store)."""
        keys = self._call(lambda: list(self.client.scan_iter(f"{self.prefix}:*", count=1000)))
        if keys:
            self._call(self.client.delete, *keys)

    def close(self) -> None:
        self.client.close()
