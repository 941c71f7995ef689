"""Decoded user states kept in memory, each under the exact bytes it was stored as: no stale reads.

Decoding a state (state.loads) costs about as much as a third of a one-event model step. A process
that wrote a user's state last keeps the decoded state with those bytes; the next update or
recommend reads the stored bytes as before (the store stays the truth) and takes the kept state only
if they are equal, byte for byte. Anything else (another process wrote the user, an update that was
rolled back, a rebuild) makes them differ, and the state is decoded from the store as without
the cache.

A state is taken out (`take`) while a request uses it: a model step changes it in place, so no other
thread may hold it meanwhile; it comes back (`put`) with the bytes it is then stored as. Least
recently used states are dropped beyond `max_bytes` (counted as twice the stored size: the bytes and
the decoded tensors). `max_bytes=0` turns it off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .state import UserState


class StateCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, UserState]] = OrderedDict()
        self._lock = threading.Lock()
        self.size = 0
        self.hits = self.misses = 0

    def take(self, user: str, blob: bytes) -> UserState | None:
        """The kept state of `user` if it was stored as exactly `blob` (it leaves the cache), else None."""
        with self._lock:
            entry = self._entries.pop(user, None)
            if entry is not None:
                self.size -= 2 * len(entry[0])
            if entry is not None and entry[0] == blob:
                self.hits += 1
                return entry[1]
            self.misses += 1
            return None

    def put(self, user: str, blob: bytes, state: UserState) -> None:
        """Keep `state`, which `blob` encodes; the caller no longer changes it."""
        if 2 * len(blob) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(user, None)
            if old is not None:
                self.size -= 2 * len(old[0])
            self._entries[user] = (blob, state)
            self.size += 2 * len(blob)
            while self.size > self.max_bytes:
                _, (dropped, _) = self._entries.popitem(last=False)
                self.size -= 2 * len(dropped)
