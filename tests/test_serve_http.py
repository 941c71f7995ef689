"""The HTTP service on loopback: API and 4xx cases, metrics, the committed OpenAPI schema, schema
fuzzing (no 5xx), and failures — SIGKILL during an event stream, two processes sharing Redis,
Redis restarted under load."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinkrec.serve import Engine, SQLiteStore
from sinkrec.serve import state as codec
from sinkrec.serve.app import create_app
from sinkrec.serve.openapi import render

from .test_serve import _one_thread, random_events, redis_url, tiny_recommender  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn in a thread of the test process, on a free loopback port."""

    def __init__(self, engine: Engine, **options):
        self.port = free_port()
        config = uvicorn.Config(create_app(engine, **options), host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


def events_body(events) -> dict:
    return {"events": [{"user": e.user, "item": e.item, "timestamp": e.timestamp, "event_id": e.event_id}
                       for e in events]}


def test_http_api_errors_and_metrics(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    with ThreadServer(engine) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json()["checkpoint"] == engine.checkpoint
        body = events_body(random_events(12, users=2))
        assert http.post("/v1/events", json=body).json() == {"recorded": 12, "duplicates": 0}
        assert http.post("/v1/events", json=body).json() == {"recorded": 0, "duplicates": 12}  # a retry
        r = http.post("/v1/recommend", json={"requests": [{"user": "u0", "k": 3},
                                                          {"history": ["i1", "i2"], "k": 2, "exclude": ["i5"]}]})
        assert r.status_code == 200
        results = r.json()["results"]
        assert results[0]["items"] == engine.recommend(user="u0", k=3)["items"] and len(results[1]["items"]) == 2
        assert http.get("/v1/users/u0").json()["events"] == len(engine.store.events("u0"))

        def error(method, path, payload=None):
            resp = http.request(method, path, json=payload)
            return resp.status_code, resp.json()["error"]["code"]

        event = {"user": "u0", "item": "i1", "timestamp": 1.0, "event_id": "x1"}
        assert error("POST", "/v1/events", {"events": [{**event, "item": "nope"}]}) == (422, "unknown_item")
        assert error("POST", "/v1/events", {"events": [{**event, "user": "bad id!"}]}) == (422, "invalid_request")
        assert error("POST", "/v1/events", {"events": []}) == (422, "invalid_request")
        first = engine.store.events("u0")[0]
        changed = {**event, "event_id": first.event_id, "item": "i40" if first.item != "i40" else "i39"}
        assert error("POST", "/v1/events", {"events": [changed]}) == (409, "event_conflict")
        assert error("POST", "/v1/recommend", {"requests": [{"user": "u0", "k": 0}]}) == (422, "invalid_request")
        assert error("POST", "/v1/recommend", {"requests": [{"user": "ghost"}]}) == (404, "unknown_user")
        assert error("POST", "/v1/recommend", {"requests": [{"user": "u0", "history": ["i1"]}]})[0] == 422
        assert error("POST", "/v1/recommend", {"requests": [{"history": ["i1", "??"]}]}) == (422, "unknown_item")
        assert error("GET", "/v1/users/ghost") == (404, "unknown_user")
        bad_json = http.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
        assert bad_json.status_code == 422
        text = http.get("/metrics").text
        assert 'sinkrec_requests_total{endpoint="/v1/events",method="POST",status="200"} 2.0' in text
        assert "sinkrec_request_latency_seconds_bucket" in text and "sinkrec_users_held 2.0" in text
        assert 'sinkrec_events_total{outcome="duplicate"} 12.0' in text


def test_openapi_schema_is_committed():
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == render(), "regenerate: python -m sinkrec.serve.openapi > docs/openapi.json"


def _strategy(schema: dict, defs: dict) -> st.SearchStrategy:
    """Values for a JSON schema (the subset FastAPI emits), plus sometimes anything at all."""
    if "$ref" in schema:
        return st.deferred(lambda: _strategy(defs[schema["$ref"].split("/")[-1]], defs))
    if "anyOf" in schema:
        return st.one_of([_strategy(s, defs) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        props = {k: _strategy(v, defs) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                     optional={k: v for k, v in props.items() if k not in required})
    if kind == "array":
        return st.lists(_strategy(schema.get("items", {}), defs), max_size=min(schema.get("maxItems", 4), 4))
    if kind == "string":
        return st.one_of(st.sampled_from(["i1", "i7", "u0", "e1", ""]), st.text(max_size=12))
    if kind == "integer":
        return st.integers(-5, 2000)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return st.none()


def test_schema_fuzzing_finds_no_5xx(tmp_path):
    from fastapi.testclient import TestClient

    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    engine.record(random_events(5, users=1))
    app = create_app(engine)
    schema = app.openapi()
    defs = schema["components"]["schemas"]
    client = TestClient(app, raise_server_exceptions=False)
    bodies = {path: _strategy(op["post"]["requestBody"]["content"]["application/json"]["schema"], defs)
              for path, op in schema["paths"].items() if "post" in op}
    anything = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=8)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(bodies)), st.data())
    def fuzz(path, data):
        payload = data.draw(st.one_of(bodies[path], anything))
        response = client.post(path, json=payload)
        assert response.status_code < 500, (path, payload, response.text)

    fuzz()
    assert client.get("/v1/users/%00").status_code < 500


# ---- processes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A tiny trained GDN run, made with the public API (the format the server loads)."""
    import sinkrec

    out = tmp_path_factory.mktemp("run") / "gdn"
    config = {"data": {"dataset": "synthetic", "max_len": 20,
                       "synthetic": {"n_users": 40, "n_items": 60, "min_len": 10, "max_len": 30}},
              "model": {"name": "gdn", "d_model": 16}, "train": {"epochs": 1, "progress": False, "device": "cpu"},
              "output_dir": str(out)}
    return sinkrec.train(config, overwrite=True).path


class ServerProcess:
    def __init__(self, run, store: str, port: int | None = None, args: tuple = ("--workers", "1"),
                 env: dict | None = None):
        self.port = port or free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "sinkrec.cli", "serve", str(run), "--store", store,
                                      "--port", str(self.port), *args], env=env, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not become ready")

    def stop(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(20)


def _stream(url: str, items: list[str], user_count: int, start: int, acked: list, stop: threading.Event,
            size: int = 3, headers: dict | None = None):
    """A client posting batches (events of several users each); an event counts only once its batch got a 200."""
    n = start
    with httpx.Client(base_url=url, timeout=5, headers=headers) as http:
        while not stop.is_set():
            batch = [{"user": f"u{(n + j) % user_count}", "item": items[(n + j) % len(items)],
                      "timestamp": float(n + j), "event_id": f"s{start}-{n + j}"} for j in range(size)]
            n += size
            try:
                if http.post("/v1/events", json={"events": batch}).status_code == 200:
                    acked.extend((e["user"], e["event_id"]) for e in batch)
            except httpx.HTTPError:
                return


@contextlib.contextmanager
def streaming(urls: list[str], items: list[str], acked: list, clients: int, users: int = 4, size: int = 3,
              headers: dict | None = None, first_id: int = 0, id_spacing: int = 1000):
    """`clients` threads running `_stream` (client c against urls[c % len(urls)]) while the block runs."""
    stop = threading.Event()
    threads = [threading.Thread(target=_stream, args=(urls[c % len(urls)], items, users, first_id + id_spacing * c,
                                                      acked, stop, size, headers)) for c in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)


def test_sigkill_loses_no_acknowledged_event(run_folder, tmp_path):
    from sinkrec.recommend import Recommender

    items = Recommender.from_run(run_folder).item_ids[1:30]
    store = f"sqlite:///{tmp_path / 'state.db'}"
    acked: list = []
    for repetition in range(4):  # odd repetitions: 8 clients x 12-event calls over 30 users, grouped commits
        grouped = repetition % 2 == 1
        server = ServerProcess(run_folder, store)
        users, size, n_clients = (30, 12, 8) if grouped else (5, 3, 4)
        with streaming([server.url], items, acked, n_clients, users, size, first_id=80_000 * repetition,
                       id_spacing=10_000):
            time.sleep(0.6 + 0.3 * repetition)
            server.stop(signal.SIGKILL)  # mid-stream: some requests are in flight
    engine = Engine.from_run(run_folder, store)
    recorded = {(u, e.event_id) for u in engine.store.users() for e in engine.store.events(u)}
    assert acked and set(acked) <= recorded
    for user in engine.store.users():
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(engine.store.events(user)))


def test_two_processes_sharing_redis_answer_like_one(run_folder):
    import redis

    url = redis_url(db=11)
    redis.Redis.from_url(url).flushdb()
    servers = [ServerProcess(run_folder, url) for _ in range(2)]
    try:
        from sinkrec.recommend import Recommender

        items = Recommender.from_run(run_folder).item_ids[1:30]
        acked: list = []
        with streaming([s.url for s in servers], items, acked, clients=4):  # the same users through both at once
            time.sleep(1.5)
        query = {"requests": [{"user": f"u{u}", "k": 5} for u in range(4)]}
        answers = [httpx.post(s.url + "/v1/recommend", json=query, timeout=10).json() for s in servers]
        assert answers[0] == answers[1]
        engine = Engine.from_run(run_folder, url)  # one process replaying the shared logs
        for u, result in enumerate(answers[0]["results"]):
            log = engine.store.events(f"u{u}")
            assert len(log) == sum(1 for user, _ in acked if user == f"u{u}")
            alone = engine.recommend(history=[e.item for e in log], timestamps=[e.timestamp for e in log], k=5)
            assert result["items"] == alone["items"]
    finally:
        for s in servers:
            s.stop()


def test_redis_restart_under_load_is_503_then_recovery(tmp_path):
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    from sinkrec.serve.redis_store import RedisStore

    port, folder = free_port(), tmp_path / "redis"
    folder.mkdir()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
           "--appendfsync", "always", "--save", ""]
    redis_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        engine = Engine(tiny_recommender("gdn"), RedisStore(f"redis://127.0.0.1:{port}/0"))
        with ThreadServer(engine) as http:
            statuses, acked, stop = [], [], threading.Event()

            def load():
                n = 0
                while not stop.is_set():
                    event = {"user": f"u{n % 3}", "item": f"i{n % 40 + 1}", "timestamp": float(n), "event_id": f"r{n}"}
                    r = http.post("/v1/events", json={"events": [event]})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        acked.append((event["user"], event["event_id"]))
                        n += 1
                    elif r.status_code == 503:
                        assert r.headers["retry-after"] == "1"
                        time.sleep(0.02)

            worker = threading.Thread(target=load)
            worker.start()
            time.sleep(0.5)
            redis_proc.kill()
            redis_proc.wait()
            time.sleep(0.5)
            down = http.get("/readyz")
            assert down.status_code == 503 and "redis://" not in down.text  # no store address for clients
            redis_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            time.sleep(1.0)
            before = len(statuses)
            time.sleep(0.5)
            stop.set()
            worker.join(10)
            assert 503 in statuses and not [s for s in statuses if s >= 500 and s != 503]
            assert statuses[before:] and statuses[-1] == 200  # recovered
            assert "sinkrec_store_errors_total" in http.get("/metrics").text
        for user in ("u0", "u1", "u2"):
            ids = {e.event_id for e in engine.store.events(user)}
            assert {e for u, e in acked if u == user} <= ids
            assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(engine.store.events(user)))
    finally:
        redis_proc.kill()
        redis_proc.wait()


def test_cli_rebuild(run_folder, tmp_path):
    store = f"sqlite:///{tmp_path / 'r.db'}"
    engine = Engine.from_run(run_folder, store)
    items = engine.rec.item_ids[1:10]
    engine.record([e.__class__(e.user, items[i % 9], e.timestamp, e.event_id)
                   for i, e in enumerate(random_events(10, users=2))])
    out = subprocess.run([sys.executable, "-m", "sinkrec.cli", "serve", str(run_folder), "--store", store,
                          "--rebuild"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "rebuilt 2 user states" in out.stdout, out.stderr
    assert json.loads(json.dumps(engine.user_info("u0")))["events"] == len(engine.store.events("u0"))


def test_state_cache_size_reaches_each_worker(run_folder, tmp_path, monkeypatch):
    """`--state-cache-mb` travels in the workers' settings: 0 turns the decoded-state cache off."""
    from sinkrec.serve.engine import STATE_CACHE_BYTES, Engine
    from sinkrec.serve.limits import Limits
    from sinkrec.serve.server import build_app

    made = []
    load = Engine.from_run
    monkeypatch.setattr(Engine, "from_run", lambda *a, **kw: made.append(load(*a, **kw)) or made[-1])
    base = {"run": str(run_folder), "store": f"sqlite:///{tmp_path / 'state.db'}", "threads": 1, "open_metrics": False,
            "limits": Limits().to_dict()}
    for size, expected in ((None, STATE_CACHE_BYTES), (0, 0), (3 << 20, 3 << 20)):
        build_app({**base, "state_cache_bytes": size})
        assert made[-1].states.max_bytes == expected
        made[-1].store.close()


def test_one_worker_process_per_core_by_default(run_folder, tmp_path, monkeypatch):
    from sinkrec.cli import build_parser
    from sinkrec.serve import server

    assert build_parser().parse_args(["serve", str(run_folder)]).workers is None
    started = []
    monkeypatch.setattr(server.os, "cpu_count", lambda: 3)
    monkeypatch.setattr(server, "_run_workers", lambda settings, host, port, workers, level: started.append(workers))
    server.serve(run_folder, f"sqlite:///{tmp_path / 'state.db'}")
    assert started == [3]


def test_worker_freezes_its_heap_once_the_app_is_built(monkeypatch):
    """A worker's startup objects leave the cyclic GC's view after its app is built (server.freeze_heap):
    full collections then no longer walk the model and the libraries while a request waits."""
    import gc

    from sinkrec import procs
    from sinkrec.serve import server

    order = []
    monkeypatch.setattr(procs, "watch_parent", lambda *a, **kw: None)
    monkeypatch.setattr(server, "build_app", lambda settings: order.append("built") or "app")
    monkeypatch.setattr(gc, "freeze", lambda: order.append("frozen"))
    monkeypatch.setenv(server.SETTINGS_ENV, json.dumps({"parent": os.getpid()}))
    assert server.worker_app() == "app" and order == ["built", "frozen"]
