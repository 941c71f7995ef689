"""The service exposed: token auth and scopes, refusing to listen beyond loopback without auth, no
leak on 409, request limits (413), a time budget (503), admission (429), /healthz answering while a
huge body is refused, and several worker processes sharing one SQLite file."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from sinkrec.errors import SinkrecError
from sinkrec.serve import Engine, Event, SQLiteStore
from sinkrec.serve import state as codec
from sinkrec.serve.auth import Tokens
from sinkrec.serve.limits import Limits, TimeBudgetExceeded
from sinkrec.serve.server import check_exposure

from .test_serve import _one_thread, random_events, tiny_recommender  # noqa: F401 - fixture
from .test_serve_http import (
    ROOT,
    ServerProcess,
    ThreadServer,
    events_body,
    run_folder,  # noqa: F401 - fixture
    streaming,
)

READ, WRITE = "r" * 8 + "-read-token-1", "w" * 8 + "-write-token-1"


def tokens() -> Tokens:
    return Tokens.parse(f"# deployment tokens\nread:{READ}\nwrite:{WRITE}\n", "test")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_token_file_parsing_never_quotes_a_token(tmp_path):
    assert tokens().scope(READ) == "read" and tokens().scope(WRITE) == "write"
    assert tokens().scope("r" * 8 + "-read-token-2") is None and tokens().scope("") is None
    secret = "short-secret"
    for text in (f"read:{secret}", f"admin:{secret}-long-enough", secret + "-long-enough", "# only a comment"):
        with pytest.raises(SinkrecError) as caught:
            Tokens.parse(text, "token file t")
        assert secret not in str(caught.value) and "token file t" in str(caught.value)
    path = tmp_path / "tokens"
    path.write_text(f"write:{WRITE}\n")
    both = Tokens.load(path, environ={"SINKREC_SERVE_TOKENS": f"read:{READ}"})
    assert both.scope(WRITE) == "write" and both.scope(READ) == "read"
    assert Tokens.load(None, environ={}) is None


def test_non_loopback_needs_auth_or_insecure(tmp_path):
    check_exposure("127.0.0.1", None, False)
    check_exposure("::1", None, False)
    check_exposure("0.0.0.0", tokens(), False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(SinkrecError, match="refusing to serve on 0.0.0.0 without auth"):
        check_exposure("0.0.0.0", None, False)
    out = subprocess.run([sys.executable, "-m", "sinkrec.cli", "serve", str(tmp_path / "no-run"), "--host",
                          "0.0.0.0"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0 and "refusing to serve on 0.0.0.0" in out.stderr


def test_auth_scopes_and_no_leak_on_conflict(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    with ThreadServer(engine, tokens=tokens()) as http:
        body = events_body([Event("u0", "i7", 1234.5, "e1")])
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        for headers in ({}, bearer("not-a-known-token-at-all"), {"Authorization": READ}):
            r = http.post("/v1/events", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/metrics").status_code == 401 and http.get("/v1/users/u0").status_code == 401
        r = http.post("/v1/events", json=body, headers=bearer(READ))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert engine.store.events("u0") == []
        assert http.post("/v1/events", json=body, headers=bearer(WRITE)).json()["recorded"] == 1
        query = {"requests": [{"user": "u0", "k": 3}]}
        assert http.post("/v1/recommend", json=query, headers=bearer(READ)).status_code == 200
        assert http.post("/v1/recommend", json=query, headers=bearer(WRITE)).status_code == 200
        assert http.get("/metrics", headers=bearer(READ)).status_code == 200
        # another client claims the same event id with another event: told it is taken, nothing more
        claim = events_body([Event("u0", "i9", 99.0, "e1")])
        r = http.post("/v1/events", json=claim, headers=bearer(WRITE))
        assert r.status_code == 409 and r.json()["error"]["code"] == "event_conflict"
        assert "i7" not in r.text and "1234" not in r.text and "already taken" in r.text
    with ThreadServer(engine, tokens=tokens(), open_metrics=True) as http:
        assert http.get("/metrics").status_code == 200 and http.get("/v1/users/u0").status_code == 401


def test_limits_answer_413_before_any_work(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    limits = Limits(max_body_bytes=4096, max_events=5, max_queries=2, max_history=8, max_history_total=10, max_k=5)
    with ThreadServer(engine, limits=limits) as http:
        def code(path, payload=None, **kw):
            r = http.post(path, json=payload, **kw) if payload is not None else http.post(path, **kw)
            return r.status_code, r.json()["error"]["code"], r.json()["error"]["message"]

        assert code("/v1/events", events_body(random_events(6)))[:2] == (413, "too_large")
        assert engine.store.count_users() == 0
        history = {"history": ["i1"] * 6, "k": 2}
        assert "max_queries" in code("/v1/recommend", {"requests": [history] * 3})[2]
        assert "(max_history)" in code("/v1/recommend", {"requests": [{"history": ["i1"] * 9, "k": 2}]})[2]
        assert "max_history_total" in code("/v1/recommend", {"requests": [history, history]})[2]
        assert "max_k" in code("/v1/recommend", {"requests": [{"history": ["i1"], "k": 6}]})[2]
        big = b'{"events": [' + b" " * 5000 + b"]}"
        assert code("/v1/events", content=big, headers={"content-type": "application/json"})[:2] == (413, "too_large")

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        assert code("/v1/events", content=chunks(), headers={"content-type": "application/json"})[0] == 413
        assert http.post("/v1/recommend", json={"requests": [history]}).status_code == 200


def test_default_limits_refuse_16_histories_of_1000_items():
    from sinkrec.serve.limits import TooLarge
    from sinkrec.serve.schemas import RecommendRequest

    body = RecommendRequest(requests=[{"history": [f"i{n % 40 + 1}" for n in range(1000)]}] * 16)
    with pytest.raises(TooLarge, match="16000 history items over all queries"):
        Limits().check_recommend(body.requests)


def test_time_budget_stops_work_and_stores_nothing(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    past = time.monotonic() - 1
    with pytest.raises(TimeBudgetExceeded):
        engine.record(random_events(4, users=2), deadline=past)
    assert engine.store.count_users() == 0 and engine.store.events("u0") == []
    with pytest.raises(TimeBudgetExceeded):
        engine.recommend(history=["i1", "i2"], deadline=past)
    with ThreadServer(engine, limits=Limits(time_budget_s=1e-9)) as http:
        r = http.post("/v1/recommend", json={"requests": [{"history": ["i1", "i2"]}]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "time_budget_exceeded"


def test_saturated_server_answers_429_with_retry_after(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    engine.record(random_events(5, users=1))
    gate, entered = threading.Event(), threading.Semaphore(0)
    recommend = engine.recommend

    def blocked(**kw):
        entered.release()
        gate.wait(30)
        return recommend(**kw)

    engine.recommend = blocked
    with ThreadServer(engine, limits=Limits(max_concurrency=1, max_queue=1)) as http:
        query = {"requests": [{"user": "u0", "k": 2}]}
        answers = []
        first = threading.Thread(target=lambda: answers.append(http.post("/v1/recommend", json=query)))
        first.start()
        assert entered.acquire(timeout=20)  # the one slot is taken
        statuses = []
        for _ in range(20):  # the next request waits in the queue (we stop waiting for it), then one is refused
            try:
                r = httpx.post(f"{http.base_url}/v1/recommend", json=query, timeout=0.5)
                statuses.append(r.status_code)
                if r.status_code == 429:
                    break
            except httpx.ReadTimeout:
                statuses.append("queued")
        assert statuses[0] == "queued", statuses
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded"
        assert http.get("/healthz").status_code == 200  # outside /v1: never queued
        gate.set()
        first.join(20)
        assert [a.status_code for a in answers] == [200]


def test_healthz_answers_while_a_huge_body_is_refused(tmp_path):
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    with ThreadServer(engine) as http:
        for declared in (True, False):
            with socket.create_connection(("127.0.0.1", http.base_url.port)) as raw:
                head = "content-length: 60000000\r\n" if declared else "transfer-encoding: chunked\r\n"
                raw.sendall(f"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{head}\r\n"
                            .encode())
                chunk = b" " * (1 << 20)
                try:
                    for _ in range(3):  # a few MB of a 58 MB body, then health while it is still "coming"
                        raw.sendall(chunk if declared else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                except OSError:
                    pass  # the server already answered and closed: fine
                assert http.get("/healthz").json() == {"status": "ok"}
                raw.settimeout(20)
                answer = raw.recv(4096)
                assert answer.startswith(b"HTTP/1.1 413") and b"too_large" in answer


def test_worker_processes_share_one_sqlite_file(run_folder, tmp_path):  # noqa: F811 - the fixture
    """Two uvicorn workers on one port, clients writing the same users through both: every acknowledged
    event is in the log once, every state equals a replay of its log, and workers die with the parent."""
    from sinkrec.recommend import Recommender

    items = Recommender.from_run(run_folder).item_ids[1:30]
    store = f"sqlite:///{tmp_path / 'state.db'}"
    token_file = tmp_path / "tokens"
    token_file.write_text(f"write:{WRITE}\n")
    server = ServerProcess(run_folder, store, args=("--workers", "2", "--token-file", str(token_file)))
    acked: list = []
    try:
        for _ in range(16):  # fresh connections spread over both workers: none may serve without the token file
            assert httpx.post(server.url + "/v1/events", json={"events": []}, timeout=10).status_code == 401
        with streaming([server.url], items, acked, clients=6, headers=bearer(WRITE)):
            time.sleep(2.0)
        workers = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", "spawn_main"], capture_output=True,
                                 text=True).stdout.split()
    finally:
        server.stop(signal.SIGKILL)
    engine = Engine.from_run(run_folder, store)
    logs = {u: engine.store.events(u) for u in engine.store.users()}
    recorded = [(u, e.event_id) for u, log in logs.items() for e in log]
    assert acked and len(recorded) == len(set(recorded)) and set(acked) <= set(recorded)
    for user, log in logs.items():
        assert codec.dumps(engine.state(user)) == codec.dumps(engine.replay(log))
    assert len([w for w in workers if w]) >= 2
    for _ in range(100):  # PR_SET_PDEATHSIG: the workers go with their parent
        alive = [w for w in workers if subprocess.run(["kill", "-0", w], capture_output=True).returncode == 0]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive


def test_store_errors_never_show_a_redis_password():
    pytest.importorskip("redis")
    from sinkrec.serve.redis_store import RedisStore
    from sinkrec.serve.stores import StoreUnavailable

    store = RedisStore("redis://:s3cret@127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(StoreUnavailable) as caught:
        store.ping()
    assert "s3cret" not in str(caught.value) and "***@127.0.0.1:1" in str(caught.value)
