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
        """All users of a call in one optimistic transaction: WATCH every user's keys, read them in one
        pipelined round trip, compute the states, then one MULTI/EXEC (one AOF fsync with
        `appendfsync always`; Redis also shares that fsync among concurrent clients)."""
        keys = [self._keys(user) for user, _ in batch]
        stripes = sorted({zlib.crc32(user.encode()) % len(self._stripes) for user, _ in batch})
        memo: dict[str, tuple] = {}  # user -> (old state, event ids, new state): reused on a retry
        try:
            with ExitStack() as held, self.client.pipeline() as pipe:
                for n in stripes:  # in order: two calls never wait on each other's stripes
                    held.enter_context(self._stripes[n])
                for _ in range(self.max_retries):
                    try:
                        pipe.watch(*[k for _, ids_key, state_key in keys for k in (ids_key, state_key)])
                        reads = self.client.pipeline(transaction=False)  # after WATCH: a later write aborts EXEC
                        for (_, events), (_, ids_key, state_key) in zip(batch, keys):
                            if events:
                                reads.hmget(ids_key, [e.event_id for e in events])
                            reads.get(state_key)
                        answers = iter(reads.execute())
                        results, reads_of, todo = [], [], []
                        for (user, events), (log_key, _, _) in zip(batch, keys):
                            found = next(answers) if events else []
                            known = {e.event_id: tuple(json.loads(v)) for e, v in zip(events, found) if v is not None}
                            fresh, duplicates = split_new(user, events, known)
                            old, ids = next(answers), [e.event_id for e in fresh]
                            results.append((fresh, duplicates))
                            reads_of.append((old, fresh))
                            if not (user in memo and memo[user][:2] == (old, ids)):
                                todo.append((user, old, fresh, ids, lambda log_key=log_key, user=user: self._decode_log(
                                    user, self.client.lrange(log_key, 0, -1))))
                        many = getattr(step, "many", None)
                        if many is not None and len(todo) > 1:  # one batched model step for these users
                            blobs = many([(old, fresh, read_log) for _, old, fresh, _, read_log in todo])
                        else:
                            blobs = [step(old, fresh, read_log) for _, old, fresh, _, read_log in todo]
                        for (user, old, _, ids, _), blob in zip(todo, blobs):
                            memo[user] = (old, ids, blob)
                        self.computed += len(todo)
                        writes = [(user, fresh, memo[user][2], *k)
                                  for (user, _), (_, fresh), k in zip(batch, reads_of, keys)]
                        if not any(fresh or blob is not None for _, fresh, blob, *_ in writes):
                            pipe.unwatch()
                            return results
                        pipe.multi()
                        for user, fresh, blob, log_key, ids_key, state_key in writes:
                            if fresh:
                                pipe.rpush(log_key, *[json.dumps([e.event_id, e.item, float(e.timestamp)])
                                                      for e in fresh])
                                pipe.hset(ids_key, mapping={e.event_id: json.dumps([e.item, float(e.timestamp)])
                                                            for e in fresh})
                                pipe.sadd(f"{self.prefix}:users", user)
                            if blob is not None:
                                pipe.set(state_key, blob)
                        pipe.execute()
                        return results
                    except redis.exceptions.WatchError:
                        continue
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis at {self.shown_url}: {exc}") from None
        users = ", ".join(f"'{u}'" for u, _ in batch[:3])
        raise StoreUnavailable(f"user {users}: {self.max_retries} concurrent updates in a row, try again")

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
