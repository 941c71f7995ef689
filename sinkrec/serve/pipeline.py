"""One thread per process runs the event calls of the event loop, in groups: no thread pool on the hot path.

With a pool, each POST /v1/events call had a thread of its own: the calls of a process met in the
planner and in the group commit (combiner.py), and every hand-over between them — a waiting thread
woken, the GIL passed back and forth between the thread stepping the model and the one committing
(each torch op and SQLite call releases it) — cost a context switch: about a quarter of the worker's
CPU went to futex waits and wake-ups (perf, 16 threads in process). Here the event loop queues a
call and awaits a future; one thread takes every call queued so far, runs them as one group
(`run(items) -> [result or exception]`: one read snapshot, shared model steps, one commit), and
settles their futures with one wake-up of the loop. Calls arriving meanwhile form the next group.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

_STOP = object()


class Pipeline:
    """`await submit(item)`: `item`'s result from `run`, which sees every item queued at once (up to
    `max_group`) in a thread of its own; an exception `run` returns for an item is raised by its `submit`."""

    def __init__(self, run: Callable[[list], list], max_group: int = 64, name: str = "sinkrec-events"):
        self.run, self.max_group, self.name = run, max_group, name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self.groups = self.items = 0  # groups run, items run (for tests and benchmarks)

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._start()
        self._queue.put((item, future, loop))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued items, then stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _start(self) -> None:
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
        stop = False
        while not stop:
            group = [self._queue.get()]
            while len(group) < self.max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(entry is _STOP for entry in group)
            group = [entry for entry in group if entry is not _STOP]
            if group:
                self._run(group)

    def _run(self, group: list[tuple]) -> None:
        try:
            results = self.run([item for item, _, _ in group])
        except BaseException as exc:  # noqa: BLE001 - a failing group fails its calls, not the thread
            results = [exc] * len(group)
        self.groups += 1
        self.items += len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_, future, loop), result in zip(group, results):
            by_loop.setdefault(loop, []).append((future, result))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop has closed: nobody waits for these answers
                pass


def _settle(settled: list[tuple[asyncio.Future, object]]) -> None:
    for future, result in settled:
        if future.done():  # cancelled: the client went away
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
