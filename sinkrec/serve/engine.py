"""The serving engine: per-user streaming state over a store; the HTTP app is a thin layer on it.

    from sinkrec.serve import Engine, Event
    engine = Engine.from_run("runs/ml-1m-gdn")                # SQLite in runs/ml-1m-gdn/serving/
    engine.record([Event("u1", "1193", 978300760.0, "e-1")])  # durable when it returns
    engine.recommend(user="u1", k=10)

Each event is applied with one streaming step (GDN, SinkRec: O(1) in the history length). Both steps
are batch-invariant (rows.py, fused_sinkrec.py): concurrent requests share one step (step_batcher.py),
and each user's row is bit for bit its step alone, so a state rebuilt from the log (one user per step)
is bit-for-bit the state built incrementally.
Models without a fixed-size streaming cache (SASRec, Sessa) keep their last `max_len` events: an
event only appends to that window (O(1)), and each recommend re-encodes it — O(max_len²) attention
for SASRec, independent of the history length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..batch import Batch
from ..errors import SinkrecError, UnknownItemError
from . import state as codec
from . import steppers
from .combiner import Combiner
from .limits import check_deadline
from .open_store import open_store
from .state import StateFormatError, UserState
from .state_cache import StateCache
from .step_batcher import Job, probe, run_jobs
from .stores import Event, Store

log = logging.getLogger("sinkrec.serve")

# Models whose streaming cache has a fixed size. Sessa also streams, but its cache keeps attention
# keys/values for every past event (it grows with the history), so it recomputes its window instead.
FIXED_SIZE_CACHE = ("GDNRec", "SinkRec")


_thread_state = threading.local()


def pin_threads(n: int) -> None:
    """Give this OS thread torch's thread count `n`, once.

    OpenMP keeps its thread count per OS thread: `torch.set_num_threads` in the main thread leaves
    a request thread (the HTTP app's thread pool, the SQLite committer) at OpenMP's default, every
    core, unless OMP_NUM_THREADS is set. A one-event step there then spins a team of threads per op:
    measured 17 ms instead of 1 ms per GDN step on 2 busy cores.
    """
    if getattr(_thread_state, "threads", None) != n:
        torch.set_num_threads(n)
        _thread_state.threads = n


class UnknownUserError(SinkrecError):
    """No events were ever recorded for this user."""


def checkpoint_digest(recommender) -> str:
    """Identity of what produced a state: the weights, the catalogue and the window, not the file.

    Computed from the loaded model, so it is the same whatever format the checkpoint is stored in.
    """
    h = hashlib.sha256()
    name = type(recommender.model).__name__
    # States made by the earlier one-row steps (before the batch-invariant ones) differ in the last bits
    # from what a replay gives now: a new identity makes them rebuild from their logs.
    step = ["rows-step"] if name in ("GDNRec", "SinkRec") else []
    h.update(json.dumps([name, recommender.max_len, [str(i) for i in recommender.item_ids], *step]).encode())
    for name, tensor in sorted(recommender.model.state_dict().items()):
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class _Plan:
    """One call's entries waiting in the engine's planner."""

    __slots__ = ("split", "entries", "result", "error", "done")

    def __init__(self, split: Callable, entries: list[tuple]):
        self.split, self.entries, self.result, self.error = split, entries, None, None
        self.done = threading.Event()


@dataclass
class RecordResult:
    recorded: int
    duplicates: int
    rebuilt: int = 0  # stale states (older checkpoint, or unreadable) rebuilt from their log on the way


STATE_CACHE_BYTES = 128 << 20  # per process: ~2,900 GDN users of the benchmark (d=64), ~400 SinkRec users


class Engine:
    def __init__(self, recommender, store: Store, state_cache_bytes: int = STATE_CACHE_BYTES,
                 share_steps: bool = True):
        """`share_steps`: GDN and SinkRec events of concurrent requests share one batch-invariant step
        (exact; on unless the probe at start finds this machine's kernels not batch-invariant; the users
        of one call share their steps either way).
        `state_cache_bytes`: decoded states kept under their stored bytes (state_cache.py); 0: none."""
        self.rec = recommender
        self.states = StateCache(state_cache_bytes)
        self.model = recommender.model.eval()
        self.store = store
        self.streaming = bool(getattr(self.model, "supports_streaming", False)) and (
            type(self.model).__name__ in FIXED_SIZE_CACHE)
        self.step_one = steppers.stepper(self.model) if self.streaming else None  # GDN, SinkRec: inline step
        self.fused = self.step_one is not None
        self.rows = getattr(self.step_one, "rows", None)  # the batch-invariant row step
        if self.rows is not None and not probe(self.rows, self.model.new_cache, len(recommender.item_ids) - 1):
            log.warning("batched model steps are not bit-for-bit the single ones with this machine's torch "
                        "kernels: stepping each user alone")
            self.rows = None
        # Calls of concurrent request threads planned together (decode, shared row steps, encode) by one of
        # them; the SQLite store groups its calls itself (with their reads), Redis calls meet here.
        self.planner = Combiner(self._plan_group) if self.rows is not None and share_steps else None
        self.n_items = len(recommender.item_ids) - 1
        self.index = recommender.lookup  # item id → index, as Recommender.encode uses it
        self.checkpoint = checkpoint_digest(recommender)
        self.rebuilds = 0
        self.threads = torch.get_num_threads()  # what the process was set to (server.py: --threads)

    @classmethod
    def from_run(cls, run: str | Path, store: str | Store = "sqlite",
                 state_cache_bytes: int = STATE_CACHE_BYTES) -> Engine:
        """Load a run through `Recommender.from_run`; 'sqlite' keeps state in RUN/serving/state.db."""
        from ..recommend import Recommender

        run = Path(run)
        folder = run if run.is_dir() else run.parent
        return cls(Recommender.from_run(run), open_store(store, folder / "serving" / "state.db"),
                   state_cache_bytes)

    # ---- items ------------------------------------------------------------------------------
    def item_indices(self, items: Iterable[str], what: str = "item") -> list[int]:
        items = list(items)
        unknown = [(n, str(i)) for n, i in enumerate(items) if str(i) not in self.index]
        if unknown:
            shown = ", ".join(f"#{n + 1} '{i}'" for n, i in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UnknownItemError(f"unknown {what} {shown}{more}: not in the model's catalogue of "
                                   f"{self.n_items} items")
        return [self.index[str(i)] for i in items]

    # ---- state transitions ------------------------------------------------------------------
    def new_state(self) -> UserState:
        return UserState(checkpoint=self.checkpoint, cache=self.model.new_cache() if self.streaming else None)

    @torch.inference_mode()
    def advance(self, state: UserState, indices: list[int], times: list[float],
                deadline: float | None = None) -> UserState:
        """Apply events in order; streaming models take one O(1) step per event.

        Past `deadline` (time.monotonic()) it raises TimeBudgetExceeded between steps."""
        if not indices:
            return state
        pin_threads(self.threads)
        if self.streaming:
            for index, when in zip(indices, times):
                check_deadline(deadline)
                if self.fused:
                    hidden = self.step_one(state.cache, index, float(when))
                else:
                    hidden = self.model.encode_step(torch.tensor([[index]]), state.cache,
                                                    torch.tensor([[when]], dtype=torch.float64))
                state.hidden = hidden[0, -1].float().clone()
        else:  # window models: keep the last max_len events; a recommend re-encodes them
            state.window = (state.window + list(indices))[-self.rec.max_len:]
            state.times = (state.times + [float(t) for t in times])[-self.rec.max_len:]
        return self._account(state, indices)

    def _finish(self, states: list[UserState], indices: list[list[int]], jobs: list[Job | None]) -> list[UserState]:
        """The states after their row-step jobs ran (a job's error, e.g. past the deadline, is raised)."""
        for job in jobs:
            if job is not None and job.error is not None:
                raise job.error
        for state, job in zip(states, jobs):
            if job is not None:
                state.hidden = job.hidden.float().clone()
        return [self._account(s, i) for s, i in zip(states, indices)]

    def _account(self, state: UserState, indices: list[int]) -> UserState:
        for index in indices:
            state.mark_seen(index, self.n_items)
        state.n_events += len(indices)
        return state

    @torch.inference_mode()
    def advance_many(self, states: list[UserState], indices: list[list[int]], times: list[list[float]],
                     deadline: float | None = None) -> list[UserState]:
        """`advance` for several users: position j of every user that has one is one row step."""
        if self.rows is None:
            return [self.advance(s, i, t, deadline) for s, i, t in zip(states, indices, times)]
        jobs = [Job(state.cache, index, when, deadline) if index else None
                for state, index, when in zip(states, indices, times)]
        self._run_jobs([job for job in jobs if job is not None])
        return self._finish(states, indices, jobs)

    @torch.inference_mode()
    def scores(self, state: UserState) -> torch.Tensor:
        """Scores over the catalogue: one product with the item table (streaming), or the window re-encoded."""
        pin_threads(self.threads)
        if self.streaming:
            return self.model.item_scores(state.hidden[None]).float()[0]
        batch = Batch(items=torch.tensor([state.window]), lengths=torch.tensor([len(state.window)]),
                      timestamps=torch.tensor([state.times], dtype=torch.float64))
        return self.model.score_users(batch)[0].float()

    def replay(self, events: list[Event]) -> UserState:
        """A fresh state from a log; events whose item left the catalogue are skipped."""
        known = [e for e in events if e.item in self.index]
        state = self.new_state()
        return self.advance(state, [self.index[e.item] for e in known], [e.timestamp for e in known])

    def _to_advance(self, old: bytes | None, fresh: list[Event], read_log: Callable[[], list[Event]],
                    force: bool) -> UserState | None:
        """The state that `fresh` must be applied to, or None when there is nothing to write."""
        state = None
        if old is not None and not force:
            state = self.states.take(fresh[0].user, old) if fresh else None  # a call's events share one user
            try:
                state = state or codec.loads(old)
            except StateFormatError:
                state = None
            if state is not None and state.checkpoint != self.checkpoint:
                state = None
        if state is None:  # new user, stale or unreadable state: the log is the truth
            log = read_log()
            if old is None and not log and not fresh:
                return None
            if old is not None or log:
                self.rebuilds += 1
            return self.replay(log)
        return state if fresh else None

    def _step(self, force: bool = False, deadline: float | None = None) -> Callable:
        """The store's step (stores.py: Step); a row step is planned together with concurrent calls (`planner`),
        `.alone` steps by itself (for a store that holds its write lock meanwhile); `.many` does all users
        of a call at once (row steps); `.split` leaves the model work to
        a store that plans several calls itself (SQLite); `.task(entries)` makes a call's plan and
        `.plan(tasks)` runs several with the concurrent calls of other threads (each task's `result`
        or `error`), for a store that has several calls at hand but no reads of its own to share (Redis)."""
        def step(old: bytes | None, fresh: list[Event], read_log: Callable[[], list[Event]],
                 shared: bool = True) -> bytes | None:
            if shared and self.planner is not None:
                return self._planned(split, [(old, fresh, read_log)])[0]
            state = self._to_advance(old, fresh, read_log, force)
            if state is None:
                return None
            self.advance(state, [self.index[e.item] for e in fresh], [e.timestamp for e in fresh], deadline)
            return self._encode(state, fresh)

        def many(entries: list[tuple]) -> list[bytes | None]:
            if self.planner is not None:
                return self._planned(split, entries)
            states = [self._to_advance(old, fresh, read_log, force) for old, fresh, read_log in entries]
            live = [n for n, state in enumerate(states) if state is not None]
            self.advance_many([states[n] for n in live], [[self.index[e.item] for e in entries[n][1]] for n in live],
                              [[e.timestamp for e in entries[n][1]] for n in live], deadline)
            return [self._encode(state, entries[n][1]) if state is not None else None for n, state in enumerate(states)]

        def split(entries: list[tuple]) -> tuple[list[Job], Callable[[], list[bytes | None]]]:
            """`many` in two halves, for a store that steps the jobs of several calls at once (`run_jobs`):
            the decoded states' jobs, and `finish()`, their bytes once the jobs ran."""
            states = [self._to_advance(old, fresh, read_log, force) for old, fresh, read_log in entries]
            indices = [[self.index[e.item] for e in fresh] if state is not None else []
                       for state, (_, fresh, _) in zip(states, entries)]
            jobs = [Job(state.cache, index, [e.timestamp for e in fresh], deadline) if state is not None and index
                    else None for state, index, (_, fresh, _) in zip(states, indices, entries)]

            def finish() -> list[bytes | None]:
                live = [n for n, state in enumerate(states) if state is not None]
                self._finish([states[n] for n in live], [indices[n] for n in live], [jobs[n] for n in live])
                return [self._encode(state, entries[n][1]) if state is not None else None
                        for n, state in enumerate(states)]
            return [job for job in jobs if job is not None], finish

        if self.rows is not None:
            step.many, step.split, step.run_jobs = many, split, self._run_jobs
        if self.planner is not None:  # for a store with several calls at hand (Redis): `plan` them at once
            step.task, step.plan = (lambda entries: _Plan(split, entries)), self.planner.submit
        step.alone = lambda old, fresh, read_log: step(old, fresh, read_log, shared=False)
        return step

    def _planned(self, split: Callable, entries: list[tuple]) -> list[bytes | None]:
        """`split`'s result for `entries`, planned together with the calls of other threads."""
        task = _Plan(split, entries)
        self.planner.submit([task])
        if task.error is not None:
            raise task.error
        return task.result

    def _plan_group(self, tasks: list[_Plan]) -> None:
        """The planner's leader: every task decoded, all their row-step jobs run together, each encoded;
        a task's failure (the deadline, an unreadable log) stays its own."""
        pending = []
        for task in tasks:
            try:
                pending.append((task, *task.split(task.entries)))
            except Exception as exc:
                task.error = exc
        self._run_jobs([job for _, jobs, _ in pending for job in jobs])
        for task, _, finish in pending:
            try:
                task.result = finish()
            except Exception as exc:
                task.error = exc

    def _run_jobs(self, jobs: list[Job]) -> None:
        """Row-step jobs of several calls, in this thread (results and errors on the jobs)."""
        pin_threads(self.threads)
        with torch.inference_mode():
            run_jobs(self.rows, jobs)

    def _encode(self, state: UserState, fresh: list[Event]) -> bytes:
        """The state's bytes; the state is kept under them, for the user's next call (if stored)."""
        blob = codec.dumps(state)
        if fresh:
            self.states.put(fresh[0].user, blob, state)
        return blob

    # ---- public operations --------------------------------------------------------------------
    def record(self, events: list[Event], deadline: float | None = None) -> RecordResult:
        """Record events (durable when this returns) and update every user's state, all in one transaction.

        All items are checked first, so an unknown item rejects the whole call; so does an event_id
        conflict, a store failure or running past `deadline` (nothing of the call is kept). Retrying
        a call is safe (event_id).
        """
        result = self.record_calls([(events, deadline)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def record_calls(self, calls: list[tuple[list[Event], float | None]]) -> list[RecordResult | BaseException]:
        """`record` for several independent calls at once (the HTTP pipeline's group, pipeline.py): each
        call is its own transaction, answered with its result or its error; a store that plans calls
        together (SQLite's `update_calls`) reads, steps and commits them as one group."""
        out: list[RecordResult | BaseException | None] = [None] * len(calls)
        todo = []
        for n, (events, deadline) in enumerate(calls):
            try:
                self.item_indices([e.item for e in events])
            except Exception as exc:  # noqa: BLE001 - this call's answer
                out[n] = exc
                continue
            by_user: dict[str, list[Event]] = {}
            for event in events:
                by_user.setdefault(event.user, []).append(event)
            todo.append((n, list(by_user.items()), self._step(deadline=deadline)))
        before = self.rebuilds
        done = self.store.update_calls([(batch, step) for _, batch, step in todo])
        rebuilt = self.rebuilds - before  # over the group: a grouped call cannot tell its own apart
        for (n, _, _), users in zip(todo, done):
            if isinstance(users, BaseException):
                out[n] = users
                continue
            out[n] = RecordResult(sum(len(fresh) for fresh, _ in users), sum(d for _, d in users), rebuilt)
        return out

    def state(self, user: str) -> UserState:
        """The user's current state (the caller's own), refreshed first if an older checkpoint produced it."""
        return self._stored(user)[1]

    def _stored(self, user: str) -> tuple[bytes, UserState]:
        """(stored bytes, decoded state), refreshed first if an older checkpoint produced it."""
        blob = self.store.load(user)
        if blob is None:
            raise UnknownUserError(f"no events recorded for user '{user}'")
        try:
            state = self.states.take(user, blob) or codec.loads(blob)
            if state.checkpoint == self.checkpoint:
                return blob, state
        except StateFormatError:
            pass
        self.store.update(user, [], self._step())
        blob = self.store.load(user)
        return blob, codec.loads(blob)

    @torch.inference_mode()
    def recommend(self, user: str | None = None, history: list[str] | None = None,
                  timestamps: list[float] | None = None, k: int = 10, filter_seen: bool = True,
                  exclude: Iterable[str] = (), deadline: float | None = None) -> dict:
        """Top-k by a stored user's state, or by an explicit history (replayed like a log, not stored)."""
        if k < 1:
            raise SinkrecError(f"k must be ≥ 1, got {k}")
        if (user is None) == (history is None):
            raise SinkrecError("give either a user or a history")
        if user is not None:
            blob, state = self._stored(user)
        else:
            if not history:
                raise SinkrecError("the history is empty: give at least one item id")
            if timestamps is not None and len(timestamps) != len(history):
                raise SinkrecError(f"{len(timestamps)} timestamps for {len(history)} history items")
            indices = self.item_indices(history, "history item")
            times = timestamps if timestamps is not None else [float(i) for i in range(len(history))]
            state = self.advance(self.new_state(), indices, list(times), deadline)
        if state.n_events == 0 or (self.streaming and state.hidden is None):
            raise UnknownUserError(f"user '{user}' has no event with an item of this model's catalogue")
        blocked = state.seen_indices() if filter_seen else []
        blocked += [self.index[str(i)] for i in exclude if str(i) in self.index]
        out = self.rec.top_k(self.scores(state), blocked, k)
        if user is not None:
            self.states.put(user, blob, state)  # unchanged by scoring: kept for the user's next call
        return {"items": [str(i) for i in out["items"]], "scores": out["scores"]}

    def rebuild(self, users: Iterable[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
        """Recompute every (or the given) user's state from its log with this checkpoint."""
        done = 0
        for user in list(users if users is not None else self.store.users()):
            self.store.update(user, [], self._step(force=True))
            done += 1
            if progress is not None:
                progress(user)
        return done

    def user_info(self, user: str) -> dict:
        state = self.state(user)
        blob = self.store.load(user) or b""
        return {"user": user, "events": state.n_events, "checkpoint": state.checkpoint, "state_bytes": len(blob)}

    def ready(self) -> None:
        self.store.ping()
