"""Prometheus metrics of one server process, in a registry of its own (several apps per test process)."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Fine steps between 2 and 5 ms, where the per-event update target lies.
BUCKETS = (0.0005, 0.001, 0.002, 0.0025, 0.003, 0.0035, 0.004, 0.0045, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
           1.0, 2.0, 5.0)


class Metrics:
    def __init__(self, engine=None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sinkrec_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("sinkrec_request_latency_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=BUCKETS, registry=r)
        self.store_errors = Counter("sinkrec_store_errors", "store operations that failed (answered 503)",
                                    ["store"], registry=r)
        self.events = Counter("sinkrec_events", "events by outcome", ["outcome"], registry=r)
        self.users = Gauge("sinkrec_users_held", "users with a stored state", registry=r)
        self.rebuilds = Gauge("sinkrec_state_rebuilds", "states rebuilt from their log by this process",
                              registry=r)
        if engine is not None:
            self.users.set_function(lambda: _safe(engine.store.count_users))
            self.rebuilds.set_function(lambda: engine.rebuilds)


def _safe(fn) -> float:
    try:
        return float(fn())
    except Exception:  # noqa: BLE001 - a scrape must not fail because the store is down
        return math.nan
