"""How an engine or store error becomes an HTTP answer: one table for the FastAPI routes and the
plain events route (events_route.py), so both answer the same status, code, message and headers.

Error bodies are {"error": {"code", "message"}}, rendered as Starlette's JSONResponse renders them.
"""

from __future__ import annotations

import json
import logging

from ..errors import SinkrecError, UnknownItemError
from .engine import UnknownUserError
from .limits import TimeBudgetExceeded, TooLarge
from .stores import EventConflict, StoreUnavailable

log = logging.getLogger("sinkrec.serve")
RETRY = {"Retry-After": "1"}
UNAVAILABLE = "the event store is unavailable; try again"  # details (paths, hosts) go to the log, not to clients

# Looked up along the error's class hierarchy, as Starlette looks up exception handlers.
TABLE: dict[type, tuple[int, str]] = {
    StoreUnavailable: (503, "store_unavailable"), TimeBudgetExceeded: (503, "time_budget_exceeded"),
    UnknownItemError: (422, "unknown_item"), UnknownUserError: (404, "unknown_user"),
    EventConflict: (409, "event_conflict"), TooLarge: (413, "too_large"), SinkrecError: (400, "bad_request"),
}


def render(content) -> bytes:
    """JSON bytes exactly as Starlette's JSONResponse renders `content`."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def error_body(code: str, message: str) -> bytes:
    return render({"error": {"code": code, "message": message}})


class Answers:
    """`answer(exc)`: (status, body, headers) for a known error, None for any other; a store failure is
    counted in the metrics and logged."""

    def __init__(self, metrics, store_kind: str):
        self.metrics, self.store_kind = metrics, store_kind

    def answer(self, exc: BaseException) -> tuple[int, bytes, dict] | None:
        kind = next((k for k in type(exc).__mro__ if k in TABLE), None)
        if kind is None:
            return None
        status, code = TABLE[kind]
        if kind is StoreUnavailable:
            self.metrics.store_errors.labels(self.store_kind).inc()
            log.warning("store unavailable: %s", exc)
            return status, error_body(code, UNAVAILABLE), RETRY
        return status, error_body(code, str(exc)), (RETRY if status == 503 else {})
