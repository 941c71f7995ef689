"""The leader pattern shared by the serving's groupings: work of concurrent threads done in groups.

No thread of its own: the first request thread to find no group running takes every task queued
so far (its own included) and runs them as one group while the others sleep; tasks queued
meanwhile form the next group. A lone caller so runs its work in its own thread (no hand-over),
and under load a group forms while the previous one runs. Used for planning calls together
(engine.py, stores.py: one model step for many users) and for the SQLite group commit
(group_commit.py: one transaction and one fsync for many calls).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class Combiner:
    """Work of concurrent threads done in groups, without a thread of its own (the pattern of group_commit.py).

    `submit(tasks)` queues the tasks (objects with `done`, a threading.Event, and `error`); the first
    thread to find no group running leads: it takes every task queued so far (its own included, at
    most `max_group`), runs `run(group)` and wakes the others; tasks queued meanwhile form the next
    group. A lone caller so runs its own work in its own thread. An exception out of `run` becomes the
    error of every task of that group that has none.
    """

    def __init__(self, run: Callable[[list], None], max_group: int = 64):
        self.run, self.max_group = run, max_group
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._refuse: Callable[[], BaseException] | None = None  # set by `close`
        self.rounds = 0  # groups run
        self.jobs = 0  # tasks run

    def submit(self, tasks: list) -> None:
        """Returns when every task is done (results and errors are on the tasks)."""
        with self._cond:
            if self._refuse is not None:
                raise self._refuse()
            self._queue.extend(tasks)
            while self._busy and not all(task.done.is_set() for task in tasks):
                self._cond.wait()
            lead = not all(task.done.is_set() for task in tasks)
            if lead:
                self._busy = True
        if lead:
            try:
                while not all(task.done.is_set() for task in tasks):  # own tasks beyond max_group: more rounds
                    with self._cond:
                        group = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_group))]
                    self._run(group)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, refuse: Callable[[], BaseException], timeout: float) -> None:
        """Refuse new tasks (`submit` raises `refuse()`), and wait up to `timeout` s for queued ones."""
        with self._cond:
            self._refuse = refuse
            self._cond.wait_for(lambda: not self._busy and not self._queue, timeout)

    def _run(self, group: list) -> None:
        try:
            self.run(group)
        except BaseException as exc:  # a failing group fails its tasks, not the process
            for task in group:
                task.error = task.error or exc
        self.rounds += 1
        self.jobs += len(group)
        for task in group:
            task.done.set()
