"""Group commit for the SQLite store: many requests share one transaction and one fsync.

Request threads hand their work (a function of the write connection) to one committer thread and
wait. The committer takes every job queued so far, runs them inside a single `BEGIN IMMEDIATE`
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
from collections import deque
from collections.abc import Callable
from typing import Any

Work = Callable[[sqlite3.Connection], Any]


class _Job:
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work: Work):
        self.work, self.done = work, threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommitter:
    """One writer thread over one connection; `submit` blocks until the job's group is durable.

    `unavailable(exc)` turns an SQLite error into the store's StoreUnavailable. `max_group` bounds
    how many jobs share a transaction (and so how long the first of them waits).
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection],
                 unavailable: Callable[[Exception], Exception], max_group: int = 256):
        self._connect, self._unavailable, self.max_group = connect, unavailable, max_group
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0  # transactions committed (one per group)
        self.jobs = 0  # jobs committed

    def submit(self, work: Work) -> Any:
        job = _Job(work)
        with self._cond:
            if self._closed:
                raise self._unavailable(RuntimeError("the store is closed"))
            self._queue.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sinkrec-group-commit", daemon=True)
                self._thread.start()
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    # ---- the committer thread -------------------------------------------------------------------
    def _loop(self) -> None:
        conn = None
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:  # closed and drained
                    break
                group = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_group))]
            try:
                if conn is None:
                    conn = self._connect()
                self._commit(conn, group)
            except BaseException as exc:  # cannot even open: every job of the group fails
                for job in group:
                    if not job.done.is_set():
                        job.error = exc if not isinstance(exc, sqlite3.Error) else self._unavailable(exc)
                        job.done.set()
        if conn is not None:
            conn.close()

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
