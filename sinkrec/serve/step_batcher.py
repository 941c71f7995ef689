"""One model step for the events of concurrent requests of a process (the row steps: rows.py, fused_sinkrec.py).

A one-event step costs ~0.5 ms, mostly the fixed cost of ~100 small torch ops; a step over 8 users
costs about twice that. Requests that need a step at the same moment therefore share one, with the
leader pattern of combiner.py (`Combiner`, no thread of its own): a request queues its work;
the first one to find no group running takes every queued piece (its own included), does them
all — for the engine (engine.py) and the SQLite store (stores.py): decode every state, run all
their events as row steps (`run_jobs`: position j of every job that has one, as one step), encode
— and wakes the others; requests arriving meanwhile form the next group. One thread at a time does
this Python work while the others sleep (with every request thread computing at once they fought
for the GIL: 2.2 ms of CPU per event in process instead of 0.9). The row step is batch-invariant
(each row bit for bit its user's step alone), so grouping never changes a state: a replay, one
user at a time, gives the same bytes. Two calls of one user in a group are two independent rows
(each holds its own decoded copy of the state; SQLite keeps one and redoes the other; Redis never
plans them together: its per-user locks and `waves` put them in separate transactions).

`probe` checks that invariance on this machine's kernels when the engine starts; where it fails the
engine steps each request alone (with the same function, so replays stay exact either way).
"""

from __future__ import annotations

import copy
import threading

import torch

from .limits import check_deadline


class Job:
    """One user's events: its cache (updated in place), item indices and times, and the hidden after the last."""

    __slots__ = ("cache", "items", "times", "deadline", "hidden", "error", "done")

    def __init__(self, cache, items: list[int], times: list[float], deadline: float | None = None):
        self.cache, self.items, self.times, self.deadline = cache, items, times, deadline
        self.hidden: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


def run_jobs(rows, jobs: list[Job]) -> None:
    """Position j of every job that has one, as one row step; a job past its deadline drops out with its error."""
    live = [job for job in jobs if job.error is None]
    for j in range(max((len(job.items) for job in live), default=0)):
        active = []
        for job in live:
            if len(job.items) > j and job.error is None:
                try:
                    check_deadline(job.deadline)
                    active.append(job)
                except Exception as exc:  # TimeBudgetExceeded: this job only
                    job.error = exc
        if not active:
            break
        hidden = rows([job.cache for job in active], [job.items[j] for job in active],
                      [float(job.times[j]) for job in active])
        for r, job in enumerate(active):
            job.hidden = hidden[r]


def probe(rows, new_cache, n_items: int, users: int = 5, steps: int = 3) -> bool:
    """Whether `rows` is batch-invariant here: random users (one new) stepped together and alone, bit for bit."""
    g = torch.Generator().manual_seed(0)
    together = [new_cache() for _ in range(users)]
    with torch.inference_mode():
        rows(together[1:], [1 + n % n_items for n in range(users - 1)], [0.0] * (users - 1))  # all but one: a past
        for cache in together[1:]:
            _jitter(cache, g)
        alone = copy.deepcopy(together)
        for step in range(steps):
            items = [1 + int(i) for i in torch.randint(0, n_items, (users,), generator=g)]
            whens = [float(t) for t in torch.rand(users, generator=g, dtype=torch.float64) * 1e5 + 1e5 * step]
            hidden = rows(together, items, whens)
            for n in range(users):
                if not torch.equal(rows([alone[n]], [items[n]], [whens[n]])[0], hidden[n]):
                    return False
        return _equal(together, alone)


def _jitter(obj, g: torch.Generator):
    """Random values in every float tensor of a cache (dataclasses, lists and dicts of tensors), in place."""
    if isinstance(obj, torch.Tensor):
        return torch.randn(obj.shape, generator=g, dtype=obj.dtype) if obj.is_floating_point() else obj
    if isinstance(obj, list):
        obj[:] = [_jitter(x, g) for x in obj]
    elif isinstance(obj, dict):
        obj.update({k: _jitter(v, g) for k, v in obj.items()})
    elif hasattr(obj, "__dict__"):
        for name, value in vars(obj).items():
            setattr(obj, name, _jitter(value, g))
    return obj


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if hasattr(a, "__dict__"):
        return _equal(vars(a), vars(b))
    return a == b
