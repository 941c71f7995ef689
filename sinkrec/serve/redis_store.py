"""Redis store: several server processes (or machines) share user state through one Redis.

Per user (keys share a `{user}` hash tag, so a Redis Cluster keeps them on one shard):
    PREFIX:{user}:log    list of [event_id, item, timestamp] JSON, in arrival order
    PREFIX:{user}:ids    hash event_id -> [item, timestamp] (idempotency and conflict check)
    PREFIX:{user}:state  the state bytes (state.py)
and PREFIX:users, the set of users. An update is optimistic: WATCH the user's keys, compute the
state in Python (the model runs here, not in Lua), then MULTI/EXEC; a concurrent writer makes EXEC
fail and the update is retried on the new state. Durability is Redis's: run it with
`appendonly yes` and `appendfsync always` for an acknowledged event to survive a power loss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .stores import Event, Step, Store, StoreUnavailable, split_new

log = logging.getLogger("sinkrec.serve")
ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
          redis.exceptions.ReadOnlyError, redis.exceptions.ClusterDownError)


class RedisStore(Store):
    kind = "redis"

    def __init__(self, url: str, prefix: str = "sinkrec", max_retries: int = 50):
        self.url, self.prefix, self.max_retries = url, prefix, max_retries
        # Fail fast when Redis is down: the client gets a 503 and retries, a request never hangs.
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=1,
                                           retry=Retry(NoBackoff(), 0), health_check_interval=10)
        try:
            config = self.client.config_get("append*")
            if config.get(b"appendonly") != b"yes" or config.get(b"appendfsync") != b"always":
                log.warning("Redis at %s runs without appendonly yes + appendfsync always: an acknowledged "
                            "event can be lost if Redis itself dies", url)
        except redis.exceptions.RedisError:
            pass  # CONFIG may be disabled (managed Redis) or Redis not up yet; serving still works

    def _keys(self, user: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:{{{user}}}"
        return f"{base}:log", f"{base}:ids", f"{base}:state"

    def update(self, user: str, events: list[Event], step: Step) -> tuple[list[Event], int]:
        log_key, ids_key, state_key = self._keys(user)
        try:
            with self.client.pipeline() as pipe:
                for _ in range(self.max_retries):
                    try:
                        pipe.watch(ids_key, state_key)
                        ids = [e.event_id for e in events]
                        found = pipe.hmget(ids_key, ids) if ids else []
                        known = {i: tuple(json.loads(v)) for i, v in zip(ids, found) if v is not None}
                        fresh, duplicates = split_new(user, events, known)
                        old = pipe.get(state_key)
                        blob = step(old, fresh, lambda: self._decode_log(user, pipe.lrange(log_key, 0, -1)))
                        if not fresh and blob is None:
                            pipe.unwatch()
                            return fresh, duplicates
                        pipe.multi()
                        if fresh:
                            pipe.rpush(log_key, *[json.dumps([e.event_id, e.item, float(e.timestamp)])
                                                  for e in fresh])
                            pipe.hset(ids_key, mapping={e.event_id: json.dumps([e.item, float(e.timestamp)])
                                                        for e in fresh})
                            pipe.sadd(f"{self.prefix}:users", user)
                        if blob is not None:
                            pipe.set(state_key, blob)
                        pipe.execute()
                        return fresh, duplicates
                    except redis.exceptions.WatchError:
                        continue
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis at {self.url}: {exc}") from None
        raise StoreUnavailable(f"user '{user}': {self.max_retries} concurrent updates in a row, try again")

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
            raise StoreUnavailable(f"Redis at {self.url}: {exc}") from None

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
