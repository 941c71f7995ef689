"""Group commit for the SQLite store: many requests share one transaction and one fsync.

Request threads queue their work (a function of the write connection); one of them at a time, the
leader, takes every job queued so far and runs them inside a single `BEGIN IMMEDIATE`
transaction — each job under its own SAVEPOINT, so a job that fails (an event_id conflict, a bad
state) is rolled back alone — then COMMITs once. With `synchronous=FULL` in WAL mode the COMMIT
returns only after the WAL is fsynced, and only then are the waiting requests released: an
acknowledged event is on disk, whichever group carried it.

While one group commits, new requests queue up and form the next group, so under load the fsync
cost is shared by all requests in flight instead of being paid once per user.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .combiner import Combiner

Work = Callable[[sqlite3.Connection], Any]


class _Job:
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Work):
        self.work, self.done = work, threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Group commit on the leader pattern (combiner.py): the first request to find no commit running leads.

    `submit` queues the job; if no other thread is committing, this one takes every job queued so
    far (its own included), commits them as one group and wakes the others; otherwise it waits, and
    either finds its job committed by the leader or becomes the next leader, for everything queued
    meanwhile. A lone request so commits in its own thread (no hand-over to another thread and
    back: two thread wake-ups less on the latency path), and under load a group still forms while
    the previous one fsyncs.

    `unavailable(exc)` turns an SQLite error into the store's StoreUnavailable. `max_group` bounds
    how many jobs share a transaction. `writer_lock` (optional) is held around each transaction: a
    file lock shared with the other processes that write the same file (stores.py), so a waiting
    writer sleeps in the kernel and wakes as soon as the lock is free, instead of SQLite's busy
    handler polling with sleeps of up to 100 ms.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection],
                 unavailable: Callable[[Exception], Exception], max_group: int = 256,
                 writer_lock: Callable[[], Any] | None = None):
        self._connect, self._unavailable = connect, unavailable
        self._writer_lock = writer_lock
        self._groups = Combiner(self._run, max_group)
        self._conn: sqlite3.Connection | None = None  # used by one leader at a time
        self.commits = 0  # transactions committed (one per group)
        self.jobs = 0  # jobs committed

    def submit(self, work: Work) -> Any:
        job = _Job(work)
        self._groups.submit([job])
        if job.error is not None:
            raise job.error
        return job.result

    def submit_all(self, works: list[Work]) -> list[Any]:
        """Several jobs at once (in one group, with whatever else is queued): each one's result or error."""
        jobs = [_Job(work) for work in works]
        self._groups.submit(jobs)
        return [job.error if job.error is not None else job.result for job in jobs]

    def pending(self) -> int:
        return self._groups.pending()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, let queued ones commit, then close the connection."""
        self._groups.close(lambda: self._unavailable(RuntimeError("the store is closed")), timeout)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ---- the leader's part --------------------------------------------------------------------
    def _run(self, group: list[_Job]) -> None:
        try:
            if self._conn is None:
                self._conn = self._connect()
            if self._writer_lock is None:
                self._commit(self._conn, group)
            else:
                with self._writer_lock():
                    self._commit(self._conn, group)
        except BaseException as exc:  # cannot even open: every job of the group fails
            for job in group:
                if not job.done.is_set():
                    job.error = exc if not isinstance(exc, sqlite3.Error) else self._unavailable(exc)
                    job.done.set()

    def _commit(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.work(conn)
                except sqlite3.Error:
                    raise  # the connection itself is in trouble: abort the whole group
                except BaseException as exc:  # this job only (conflict, bad state): undo it, keep the others
                    job.error = exc
                    conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            conn.execute("COMMIT")  # synchronous=FULL: returns after the WAL is fsynced
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            error = self._unavailable(exc)
            for job in group:
                job.error, job.result = error, None
        else:
            self.commits += 1
            self.jobs += len(group)
        for job in group:
            job.done.set()
