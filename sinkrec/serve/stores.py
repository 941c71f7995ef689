"""Where user state lives: one small interface, an embedded SQLite store and (redis_store.py) Redis.

A store keeps, per user, the ordered log of events (so a state can be rebuilt exactly) and the
latest state bytes. `update_many` is the one write path: in one atomic step it drops events already
recorded (idempotent retries), lets the engine compute each user's new state from the old one, and
commits logs and states together — a state never runs ahead of or behind its log. All users of one
call share one transaction (SQLite: one fsync, shared with concurrent calls by group_commit.py;
Redis: one MULTI/EXEC).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SinkrecError
from .combiner import Combiner
from .group_commit import GroupCommitter


@dataclass(frozen=True)
class Event:
    user: str
    item: str
    timestamp: float
    event_id: str


class StoreUnavailable(SinkrecError):
    """The store cannot be reached now (the service answers 503 and the client retries)."""


class EventConflict(SinkrecError):
    """An event_id was already recorded for this user with a different item or timestamp."""


# step(old state bytes or None, new events in order, read_log) -> new state bytes, or None for no change.
# read_log() returns the user's events recorded before this update (for a rebuild inside the update).
Step = Callable[[bytes | None, list[Event], Callable[[], list[Event]]], bytes | None]


class Store:
    """The interface the engine uses; both stores implement exactly this."""

    kind = "abstract"

    def update(self, user: str, events: list[Event], step: Step) -> tuple[list[Event], int]:
        """Atomically record the new events and the state `step` derives; returns (recorded, duplicates)."""
        return self.update_many([(user, events)], step)[0]

    def update_many(self, batch: list[tuple[str, list[Event]]], step: Step) -> list[tuple[list[Event], int]]:
        """`update` for several (distinct) users in one atomic, durable transaction."""
        raise NotImplementedError

    def update_calls(self, calls: list[tuple[list[tuple[str, list[Event]]], Step]]) -> list:
        """`update_many` for several independent calls: each call's result, or its error (that call alone
        undone). Here one after another; a store that can plan and commit them as one group overrides it."""
        results = []
        for batch, step in calls:
            try:
                results.append(self.update_many(batch, step))
            except Exception as exc:  # noqa: BLE001 - this call's answer
                results.append(exc)
        return results

    def load(self, user: str) -> bytes | None:
        raise NotImplementedError

    def events(self, user: str) -> list[Event]:
        raise NotImplementedError

    def users(self) -> Iterator[str]:
        raise NotImplementedError

    def count_users(self) -> int:
        raise NotImplementedError

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def split_new(user: str, events: list[Event], known: dict[str, tuple[str, float]]) -> tuple[list[Event], int]:
    """Events not yet recorded (first occurrence wins within a request), and the duplicate count."""
    fresh, seen, duplicates = [], dict(known), 0
    for event in events:
        previous = seen.get(event.event_id)
        if previous is None:
            seen[event.event_id] = (event.item, event.timestamp)
            fresh.append(event)
            continue
        if previous != (event.item, float(event.timestamp)):
            # Only that the id is taken: what the other event holds is not the caller's to read.
            raise EventConflict(f"event_id '{event.event_id}' of user '{user}' is already taken by a different "
                                "event; a retry must repeat the same event, a new event needs a new id")
        duplicates += 1
    return fresh, duplicates


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (user TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL,
    item TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (user, seq), UNIQUE (user, event_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS states (user TEXT PRIMARY KEY, n_events INTEGER NOT NULL, blob BLOB NOT NULL);
"""


WAL_LIMIT = 64 << 20  # bytes of WAL past which the checkpointer empties it (SQLiteStore._checkpoint_loop)


class _Call:
    """One update_many call waiting for its plans (stores.py's planner: a combiner.Combiner)."""

    __slots__ = ("batch", "step", "result", "error", "done")

    def __init__(self, batch: list[tuple[str, list[Event]]], step: Step):
        self.batch, self.step, self.result, self.error = batch, step, None, None
        self.done = threading.Event()


class SQLiteStore(Store):
    """Embedded default: one file in WAL mode, `synchronous=FULL` so a commit is on disk before the ack.

    Writes go through a GroupCommitter: one request thread at a time commits all concurrent calls in
    one transaction (one fsync); states are computed before, outside the write lock (`update_many`),
    by concurrent calls at once.
    Several processes on one machine may share the file: a file lock (PATH-writer.lock) and
    `BEGIN IMMEDIATE` serialise their writers, and each re-reads a user's state row inside its
    write transaction (`_write`).
    WAL checkpoints run in a background thread (PASSIVE, every `checkpoint_every` s), never inside a
    commit: the writer connection has `wal_autocheckpoint=0`.
    `synchronous="NORMAL"` is an explicit opt-out (faster, but a
    power loss can drop the last acknowledged commits; a process crash cannot) and is never the default.
    """

    kind = "sqlite"

    def __init__(self, path: str | Path, synchronous: str = "FULL", checkpoint_every: float = 0.5,
                 wal_limit: int = WAL_LIMIT):
        if synchronous.upper() not in ("FULL", "EXTRA", "NORMAL"):
            raise SinkrecError(f"synchronous must be FULL, EXTRA or NORMAL, got {synchronous!r}")
        if str(path) == ":memory:" or str(path).startswith("file::memory:"):  # each connection: its own database
            raise SinkrecError("an in-memory SQLite database cannot hold serving state (every thread would see "
                               "its own empty one, and nothing would outlive the process): give a file path")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(SCHEMA)
        self._lock_fds: dict[str, int] = {}  # one open file per user of the lock: flock excludes across them
        self.wal_limit = wal_limit
        self._committer = GroupCommitter(self._connect_writer, self._unavailable, writer_lock=self._writer_lock)
        self._starting = threading.Lock()
        self._planner = Combiner(self._plan_calls)
        self.checkpoints = 0  # background WAL checkpoints run
        self.truncations = 0  # of them, those that emptied the WAL (it had grown past wal_limit)
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(checkpoint_every,),
                                              name="sinkrec-wal-checkpoint", daemon=True)

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints belong to the background thread
        return conn

    @contextlib.contextmanager
    def _writer_lock(self, holder: str = "commit"):
        """An exclusive flock on PATH-writer.lock around each write transaction (POSIX; elsewhere SQLite's
        own busy handler alone): writers of other processes wait in the kernel, woken the moment it is free.
        Each `holder` of this process (the group commit, the checkpointer) has a file of its own: flock
        belongs to the open file, so two holders sharing one would never exclude each other."""
        try:
            import fcntl
        except ImportError:  # Windows
            yield
            return
        fd = self._lock_fds.get(holder)
        if fd is None:
            fd = self._lock_fds[holder] = os.open(f"{self.path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _checkpoint_loop(self, every: float) -> None:
        """PASSIVE checkpoints every `every` s; a TRUNCATE one, with the writers held, once the WAL passes
        `wal_limit` bytes.

        A PASSIVE checkpoint copies what no reader still needs, but SQLite starts the WAL over only when a
        writer finds every frame copied and no reader on the WAL: under steady load (the two workers' read
        snapshots, commits every few ms) that never happened, and the WAL grew by every state written
        (1.7 GB after 30 s at 1,800 events/s). Past the limit the checkpointer takes the writers' file
        lock (writers of every process wait in the kernel), lets the readers move to the last snapshot,
        copies the few frames the PASSIVE rounds left, and empties the file: a stall of a few ms."""
        conn = None
        wal = f"{self.path}-wal"
        while not self._stop.wait(every):
            try:
                if conn is None:
                    conn = self._connect()
                    conn.execute("PRAGMA busy_timeout=200")  # a lingering reader: retry later, never stall writers
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
                if os.path.exists(wal) and os.path.getsize(wal) > self.wal_limit:
                    with self._writer_lock("checkpoint"):
                        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    self.truncations += not busy
            except (sqlite3.Error, StoreUnavailable):
                pass  # busy or unavailable now: the next round tries again
        if conn is not None:
            conn.close()

    @property
    def commits(self) -> int:
        """Write transactions committed by this store (one per group of concurrent calls)."""
        return self._committer.commits

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"SQLite store {self.path}: {exc}")

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def update_many(self, batch: list[tuple[str, list[Event]]], step: Step) -> list[tuple[list[Event], int]]:
        """Compute outside the write lock, write inside it.

        The new states are computed in the calling thread from a read snapshot (WAL readers do not
        block the writer, so the model runs while another group fsyncs, and in parallel across
        processes). The group commit then re-reads each user's state row inside the write transaction:
        unchanged (same event count and bytes) means no event of that user was recorded meanwhile,
        and the precomputed result is written; otherwise it is recomputed there, under the lock.
        Concurrent calls of a process are planned together, by one of their threads at a time
        (`_plan_calls`): one read snapshot, and one shared model step for all of their users.
        """
        result = self.update_calls([(batch, step)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def update_calls(self, calls: list[tuple[list[tuple[str, list[Event]]], Step]]) -> list:
        """`update_many` for several independent calls at once: planned together (with those of other
        threads), committed in one group; each call's result, or its error (that call alone rolled back)."""
        with self._starting:
            if not self._checkpointer.is_alive() and not self._stop.is_set():  # a store that writes checkpoints
                self._checkpointer.start()
        planned = [_Call(batch, step) for batch, step in calls]
        self._planner.submit(planned)
        ready = [call for call in planned if call.error is None]
        written = iter(self._committer.submit_all([
            lambda conn, call=call: [self._write(conn, user, events, call.step, plan)
                                     for (user, events), plan in zip(call.batch, call.result)] for call in ready]))
        return [call.error if call.error is not None else next(written) for call in planned]

    def _read(self, fn: Callable[[sqlite3.Connection], object]):
        conn = self._conn()
        try:
            conn.execute("BEGIN")  # one snapshot for every read of the call
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from None

    def _plan_calls(self, calls: list[_Call]) -> None:
        """Plans for the calls queued together (the planner's leader runs this; the other threads sleep):
        one read snapshot; a step with `split` (the row steps) leaves its model work as row-step jobs, and the jobs
        of all calls run as shared steps; each call's failure (a conflict, the deadline) stays its own."""
        def plan(conn: sqlite3.Connection) -> None:
            pending = []
            for call in calls:
                try:
                    split = getattr(call.step, "split", None)
                    if split is None:
                        call.result = self._plan_all(conn, call.batch, call.step)
                        continue
                    reads = [self._known(conn, user, events) for user, events in call.batch]
                    jobs, finish = split([(row[1] if row else None, fresh, lambda user=user: self._read_log(conn, user))
                                          for (user, _), (row, fresh, _) in zip(call.batch, reads)])
                    pending.append((call, reads, jobs, finish))
                except sqlite3.Error:
                    raise
                except Exception as exc:  # this call only
                    call.error = exc
            runners: list[tuple[Callable, list]] = []  # calls of one engine share steps
            for call, _, jobs, _ in pending:
                same = [r for r in runners if r[0] == call.step.run_jobs]
                (same[0][1].extend(jobs) if same else runners.append((call.step.run_jobs, list(jobs))))
            for run_jobs, jobs in runners:
                run_jobs(jobs)
            for call, reads, _, finish in pending:
                try:
                    call.result = [(*read, blob) for read, blob in zip(reads, finish())]
                except Exception as exc:
                    call.error = exc
        self._read(plan)

    def _plan_all(self, conn: sqlite3.Connection, batch: list[tuple[str, list[Event]]], step: Step) -> list[tuple]:
        """Plans for every user of a call; one batched model step when the step offers one (`step.many`)."""
        many = getattr(step, "many", None)
        if many is None or len(batch) < 2:
            return [self._plan(conn, user, events, step) for user, events in batch]
        reads = [self._known(conn, user, events) for user, events in batch]
        blobs = many([(row[1] if row else None, fresh, lambda user=user: self._read_log(conn, user))
                      for (user, _), (row, fresh, _) in zip(batch, reads)])
        return [(*read, blob) for read, blob in zip(reads, blobs)]

    def _plan(self, conn: sqlite3.Connection, user: str, events: list[Event], step: Step) -> tuple:
        """(state row read, new events, duplicates, new state) for one user, from `conn`'s view."""
        row, fresh, duplicates = self._known(conn, user, events)
        blob = step(row[1] if row else None, fresh, lambda: self._read_log(conn, user))
        return row, fresh, duplicates, blob

    def _known(self, conn: sqlite3.Connection, user: str, events: list[Event]) -> tuple:
        """(state row, new events, duplicates) for one user, from `conn`'s view."""
        ids = [e.event_id for e in events]
        known = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows = conn.execute(f"SELECT event_id, item, ts FROM events WHERE user = ? AND event_id IN "
                                f"({','.join('?' * len(chunk))})", [user, *chunk])
            known.update({r[0]: (r[1], r[2]) for r in rows})
        fresh, duplicates = split_new(user, events, known)
        row = conn.execute("SELECT n_events, blob FROM states WHERE user = ?", (user,)).fetchone()
        return row, fresh, duplicates

    def _write(self, conn: sqlite3.Connection, user: str, events: list[Event], step: Step,
               plan: tuple) -> tuple[list[Event], int]:
        """One user's update inside the group's open write transaction."""
        now = conn.execute("SELECT n_events, blob FROM states WHERE user = ?", (user,)).fetchone()
        if now != plan[0]:  # written since the snapshot (a concurrent call, or earlier in this group)
            plan = self._plan(conn, user, events, getattr(step, "alone", step))  # under the write lock: no waiting
        row, fresh, duplicates, blob = plan
        count = row[0] if row else 0
        if fresh:
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                             [(user, count + i, e.event_id, e.item, float(e.timestamp)) for i, e in enumerate(fresh)])
        if blob is not None:
            conn.execute("INSERT OR REPLACE INTO states VALUES (?, ?, ?)", (user, count + len(fresh), blob))
        return fresh, duplicates

    @staticmethod
    def _read_log(conn: sqlite3.Connection, user: str) -> list[Event]:
        rows = conn.execute("SELECT item, ts, event_id FROM events WHERE user = ? ORDER BY seq", (user,))
        return [Event(user, item, ts, event_id) for item, ts, event_id in rows]

    def load(self, user: str) -> bytes | None:
        row = self._query("SELECT blob FROM states WHERE user = ?", (user,))
        return row[0][0] if row else None

    def events(self, user: str) -> list[Event]:
        try:
            return self._read_log(self._conn(), user)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from None

    def users(self) -> Iterator[str]:
        yield from (r[0] for r in self._query("SELECT DISTINCT user FROM events ORDER BY user", ()))

    def count_users(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM states", ())[0][0])

    def ping(self) -> None:
        self._query("SELECT 1", ())

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from None

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer.is_alive():
            self._checkpointer.join()
        self._committer.close()
        for fd in self._lock_fds.values():
            os.close(fd)
        self._lock_fds.clear()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
