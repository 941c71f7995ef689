"""Prometheus metrics of the server: per process in a registry of its own, summed over the worker processes.

With several worker processes (server.py), a scrape reaches one of them, yet must describe the
whole server. Each worker therefore writes a snapshot of its own samples to a shared directory
(`worker-PID.json`, replaced atomically) every `flush_every` seconds, and again right before it
answers a scrape; the worker that answers reads every snapshot and merges them:

- counters and histograms (requests, latency buckets, events, store errors) are summed over every
  snapshot, including those of workers that have exited (a restarted worker starts a new file, so
  totals never go backwards);
- `sinkrec_state_rebuilds` is summed the same way (states rebuilt by any worker since the start);
- `sinkrec_users_held` describes the shared store: the answering worker's own reading;
- `sinkrec_workers` counts the snapshots whose process is alive.

Other workers' samples are at most `flush_every` seconds old. Without a directory (one process,
or an app built in a test) the registry is rendered as it is.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from ..procs import alive

# Fine steps between 2 and 5 ms, where the per-event update target lies.
BUCKETS = (0.0005, 0.001, 0.002, 0.0025, 0.003, 0.0035, 0.004, 0.0045, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
           1.0, 2.0, 5.0)
LOCAL_GAUGES = ("sinkrec_users_held",)  # the same store seen from every worker: not summed


class Metrics:
    def __init__(self, engine=None, directory: str | Path | None = None, flush_every: float = 0.5):
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
        self.rebuilds = Gauge("sinkrec_state_rebuilds", "states rebuilt from their log (summed over workers)",
                              registry=r)
        if engine is not None:
            self.users.set_function(lambda: _safe(engine.store.count_users))
            self.rebuilds.set_function(lambda: engine.rebuilds)
        self.directory = Path(directory) if directory is not None else None
        self._write_lock = threading.Lock()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.flush()
            stop = self._stop = threading.Event()

            def loop() -> None:
                while not stop.wait(flush_every):
                    try:
                        self.flush()
                    except OSError:  # a full or vanished directory: the next round tries again
                        pass

            threading.Thread(target=loop, name="sinkrec-metrics-flush", daemon=True).start()

    # ---- this process's snapshot --------------------------------------------------------------------
    def snapshot(self, local: bool = True) -> list[dict]:
        """This process's metric families: name, type, help and samples (without `_created` timestamps);
        `local=False` leaves out LOCAL_GAUGES (only the answering worker's own are used, read live)."""
        return [{"name": m.name, "type": m.type, "help": m.documentation,
                 "samples": [[s.name, s.labels, s.value] for s in m.samples if not s.name.endswith("_created")]}
                for m in self.registry.collect() if local or m.name not in LOCAL_GAUGES]

    def flush(self, families: list[dict] | None = None) -> None:
        """Write this process's snapshot to DIR/worker-PID.json (atomically: readers see old or new)."""
        path = self.directory / f"worker-{os.getpid()}.json"
        families = self.snapshot(local=False) if families is None else families
        with self._write_lock:
            tmp = path.with_suffix(f".tmp-{threading.get_ident()}")
            tmp.write_text(json.dumps({"pid": os.getpid(), "families": families}))
            os.replace(tmp, path)

    def close(self) -> None:
        if self.directory is not None:
            self._stop.set()
            self.flush()

    # ---- the whole server ---------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text of the whole server (every worker's snapshot merged), or of this process."""
        if self.directory is None:
            return generate_latest(self.registry)
        own = self.snapshot()
        self.flush([f for f in own if f["name"] not in LOCAL_GAUGES])
        snapshots = [{"pid": os.getpid(), "families": own}]
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):  # removed meanwhile (os.replace: never half written)
                continue
            if snap.get("pid") != os.getpid():
                snapshots.append(snap)
        registry = CollectorRegistry()
        registry.register(_Merged(merge(snapshots, own=os.getpid())))
        return generate_latest(registry)


def merge(snapshots: list[dict], own: int) -> list[dict]:
    """Families summed sample by sample over `snapshots`; LOCAL_GAUGES from process `own` only."""
    families: dict[str, dict] = {}
    for snap in snapshots:
        for fam in snap["families"]:
            local = fam["name"] in LOCAL_GAUGES
            if local and snap.get("pid") != own:
                continue
            into = families.setdefault(fam["name"], {**fam, "samples": {}})
            for name, labels, value in fam["samples"]:
                key = (name, tuple(sorted(labels.items())))
                into["samples"][key] = into["samples"].get(key, 0.0) + value
    workers = sum(1 for snap in snapshots
                  if snap.get("pid") == own or (isinstance(snap.get("pid"), int) and alive(snap["pid"])))
    out = [{**fam, "samples": [[name, dict(labels), value] for (name, labels), value in fam["samples"].items()]}
           for fam in families.values()]
    out.append({"name": "sinkrec_workers", "type": "gauge", "help": "worker processes reporting metrics",
                "samples": [["sinkrec_workers", {}, float(workers)]]})
    return out


class _Merged:
    """A collector yielding already merged families (for generate_latest)."""

    def __init__(self, families: list[dict]):
        self.families = families

    def collect(self):
        for fam in self.families:
            metric = Metric(fam["name"], fam["help"], fam["type"])
            for name, labels, value in fam["samples"]:
                metric.add_sample(name, labels, value)
            yield metric


def _safe(fn) -> float:
    try:
        return float(fn())
    except Exception:  # noqa: BLE001 - a scrape must not fail because the store is down
        return math.nan
