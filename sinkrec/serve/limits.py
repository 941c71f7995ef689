"""What one request may cost: body size, batch sizes, history lengths, k, time, and how many run at once.

The schema (schemas.py) holds hard caps that are part of the API; these limits are per deployment
and may only be lower. A request over a limit is answered 413 `too_large` naming the limit, before
any model work; one over its time budget is stopped between model steps (nothing of it is stored).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

from ..errors import SinkrecError
from .schemas import MAX_EVENTS, MAX_HISTORY, MAX_K, MAX_REQUESTS


class TooLarge(SinkrecError):
    """A request over one of the deployment's limits (413)."""


class TimeBudgetExceeded(SinkrecError):
    """A request ran past its time budget and was stopped before storing anything (503)."""


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # a 1,000-event call is ~120 KB
    max_events: int = MAX_EVENTS  # events per POST /v1/events
    max_queries: int = 64  # queries per POST /v1/recommend
    max_history: int = MAX_HISTORY  # items of one explicit history
    max_history_total: int = 2000  # history items over all queries of one request (each is one model step)
    max_k: int = MAX_K
    time_budget_s: float = 5.0  # queueing included; stopped between model steps when over
    max_concurrency: int = 16  # /v1 requests running at once in one process (the calls it can plan together)
    max_queue: int = 64  # /v1 requests waiting beyond that; more are answered 429 + Retry-After

    def __post_init__(self):
        caps = {"max_events": MAX_EVENTS, "max_queries": MAX_REQUESTS, "max_history": MAX_HISTORY, "max_k": MAX_K}
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise SinkrecError(f"serve limit {f.name} must be > 0, got {value}")
            if f.name in caps and value > caps[f.name]:
                raise SinkrecError(f"serve limit {f.name} is at most {caps[f.name]} (the API's cap), got {value}")

    def to_dict(self) -> dict:
        return asdict(self)

    def check_events(self, n: int) -> None:
        if n > self.max_events:
            raise TooLarge(f"{n} events in one call: the limit is {self.max_events} (max_events)")

    def check_recommend(self, queries: list) -> None:
        if len(queries) > self.max_queries:
            raise TooLarge(f"{len(queries)} queries in one call: the limit is {self.max_queries} (max_queries)")
        total = 0
        for n, q in enumerate(queries):
            size = len(q.history or ())
            if size > self.max_history:
                raise TooLarge(f"requests[{n}].history has {size} items: the limit is {self.max_history} "
                               "(max_history)")
            if q.k > self.max_k:
                raise TooLarge(f"requests[{n}].k is {q.k}: the limit is {self.max_k} (max_k)")
            total += size
        if total > self.max_history_total:
            raise TooLarge(f"{total} history items over all queries: the limit is {self.max_history_total} "
                           "(max_history_total)")


def check_deadline(deadline: float | None) -> None:
    """Raise TimeBudgetExceeded once `deadline` (time.monotonic()) has passed."""
    if deadline is not None and time.monotonic() > deadline:
        raise TimeBudgetExceeded("the request ran past its time budget and was stopped; nothing was stored")
