"""Several worker processes as one server: /metrics reports the whole server (each worker's snapshot in a
shared directory, merged by whichever worker answers: serve/metrics.py), and connections spread over
the workers (each its own SO_REUSEPORT socket: serve/server.py)."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sinkrec.serve import Engine, SQLiteStore
from sinkrec.serve.metrics import Metrics, merge

from .test_serve import _one_thread, random_events, tiny_recommender  # noqa: F401 - fixture
from .test_serve_http import ServerProcess, ThreadServer, events_body, run_folder  # noqa: F401 - fixture


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of a Prometheus text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_two_apps_sharing_a_directory_report_their_sum(tmp_path):
    """Two apps in one process stand for two workers (they differ only by their snapshot file)."""
    store = SQLiteStore(tmp_path / "s.db")
    engine = Engine(tiny_recommender("gdn"), store)
    folder = tmp_path / "metrics"
    with ThreadServer(engine, metrics_dir=str(folder)) as a:
        a.post("/v1/events", json=events_body(random_events(4, users=2)))
        a.get("/v1/users/u0")
        # A second worker: a snapshot file written by another pid, with counters of its own.
        other = Metrics()
        other.events.labels("recorded").inc(3)
        other.events.labels("duplicate").inc(1)
        other.requests.labels("/v1/events", "POST", "200").inc(2)
        other.latency.labels("/v1/events").observe(0.003)
        families = other.snapshot(local=False)
        (folder / "worker-999999999.json").write_text(json.dumps({"pid": 999999999, "families": families}))
        got = samples(a.get("/metrics").text)
    assert got[("sinkrec_events_total", (("outcome", "recorded"),))] == 4 + 3
    assert got[("sinkrec_events_total", (("outcome", "duplicate"),))] == 1
    posts = (("endpoint", "/v1/events"), ("method", "POST"), ("status", "200"))
    assert got[("sinkrec_requests_total", posts)] == 1 + 2
    assert got[("sinkrec_request_latency_seconds_count", (("endpoint", "/v1/events"),))] == 1 + 1
    for le, other_count in (("0.0025", 0), ("0.0035", 1), ("+Inf", 1)):  # other's one request took 3 ms
        key = ("sinkrec_request_latency_seconds_bucket", (("endpoint", "/v1/events"), ("le", le)))
        assert got[key] - other_count in (0, 1)  # this worker's one request: in the bucket or not
    assert got[("sinkrec_request_latency_seconds_bucket", (("endpoint", "/v1/events"), ("le", "+Inf")))] == 2
    assert got[("sinkrec_users_held", ())] == 2  # the store's own count, not summed over workers
    assert got[("sinkrec_workers", ())] == 1  # pid 999999999 is not alive
    store.close()


def test_merge_keeps_exited_workers_counters_and_one_local_gauge():
    def snap(pid, recorded, users):
        return {"pid": pid, "families": [
            {"name": "sinkrec_events", "type": "counter", "help": "h",
             "samples": [["sinkrec_events_total", {"outcome": "recorded"}, recorded]]},
            {"name": "sinkrec_users_held", "type": "gauge", "help": "h",
             "samples": [["sinkrec_users_held", {}, users]]}]}

    merged = {f["name"]: f["samples"] for f in merge([snap(1, 5.0, 10.0), snap(os.getpid(), 2.0, 12.0)],
                                                     own=os.getpid())}
    assert merged["sinkrec_events"] == [["sinkrec_events_total", {"outcome": "recorded"}, 7.0]]
    assert merged["sinkrec_users_held"] == [["sinkrec_users_held", {}, 12.0]]


def test_a_two_worker_server_counts_every_event_on_every_scrape(run_folder, tmp_path):  # noqa: F811 - the fixture
    """Events posted over many connections (spread over both workers); any worker's /metrics counts all."""
    from sinkrec.recommend import Recommender

    items = Recommender.from_run(run_folder).item_ids[1:20]
    server = ServerProcess(run_folder, f"sqlite:///{tmp_path}/s.db", args=("--workers", "2"))
    try:
        posted = 0
        for n in range(40):  # a new connection each: both workers take some
            body = {"events": [{"user": f"u{n % 5}", "item": items[n % len(items)], "timestamp": float(n),
                                "event_id": f"m{n}"}]}
            assert httpx.post(server.url + "/v1/events", json=body, timeout=10).status_code == 200
            posted += 1
        deadline = time.time() + 20  # other workers' snapshots are at most flush_every (0.5 s) old
        while True:
            text = httpx.get(server.url + "/metrics", timeout=10).text
            recorded = samples(text).get(("sinkrec_events_total", (("outcome", "recorded"),)), 0)
            if recorded == posted or time.time() > deadline:
                break
            time.sleep(0.2)
        assert recorded == posted
        assert int(re.search(r"^sinkrec_workers (\S+)$", text, re.M).group(1).split(".")[0]) == 2
    finally:
        server.stop()


def _established(pid: int, port: int) -> int:
    """TCP connections of process `pid` whose local port is `port`, established (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_connections_opened_at_once_spread_over_the_workers(run_folder, tmp_path):  # noqa: F811 - the fixture
    """Each worker listens on its own SO_REUSEPORT socket: a burst of connections does not all land on one."""
    import socket
    import subprocess

    server = ServerProcess(run_folder, f"sqlite:///{tmp_path}/s.db", args=("--workers", "2"))
    conns = []
    try:
        deadline = time.time() + 30
        while int(samples(httpx.get(server.url + "/metrics", timeout=10).text)[("sinkrec_workers", ())]) < 2:
            assert time.time() < deadline, "the second worker did not start"
            time.sleep(0.2)
        for _ in range(32):
            conn = socket.create_connection(("127.0.0.1", server.port))
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(conn)
        for conn in conns:  # every connection answered: each was accepted by some worker
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        workers = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", "spawn_main"], capture_output=True,
                                 text=True).stdout.split()
        counts = [_established(int(pid), server.port) for pid in workers]
        assert len(counts) == 2 and sum(counts) == 32 and min(counts) > 0, counts
    finally:
        for conn in conns:
            conn.close()
        server.stop()
