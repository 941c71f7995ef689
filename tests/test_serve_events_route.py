"""The plain ASGI POST /v1/events route (events_route.py) against FastAPI's route, its reference: the same
status, headers and bytes for valid and invalid bodies, and invalid ones really handled by FastAPI."""

from __future__ import annotations

import asyncio
import json

import pytest

from sinkrec.serve import Engine, Event, SQLiteStore, StoreUnavailable
from sinkrec.serve.answers import Answers
from sinkrec.serve.app import create_app
from sinkrec.serve.auth import Tokens
from sinkrec.serve.events_route import EventsRoute
from sinkrec.serve.limits import Limits
from sinkrec.serve.metrics import Metrics

from .test_serve import _one_thread, tiny_recommender  # noqa: F401 - fixture

WRITE, READ = "w" * 20, "r" * 20
EVENT = {"user": "u0", "item": "i1", "timestamp": 1.0, "event_id": "e1"}


def call(app, body: bytes, content_type: bytes | None = b"application/json", token: str | None = None,
         chunks: int = 1) -> tuple[int, list, bytes]:
    """One POST /v1/events through `app` (ASGI, no sockets): status, headers, body."""
    headers = [(b"host", b"test"), (b"content-length", str(len(body)).encode())]
    headers += [(b"content-type", content_type)] if content_type is not None else []
    headers += [(b"authorization", b"Bearer " + token.encode())] if token else []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    size = max(1, -(-len(body) // chunks))
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    incoming = [{"type": "http.request", "body": p, "more_body": n < len(parts) - 1} for n, p in enumerate(parts)]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def run():
        await app(scope, receive, send)

    asyncio.run(run())
    return sent[0]["status"], sent[0]["headers"], b"".join(m.get("body", b"") for m in sent[1:])


class FailingStore(SQLiteStore):
    def update_many(self, batch, step):
        raise StoreUnavailable("disk /secret/path is gone")

    def update_calls(self, calls):
        return [StoreUnavailable("disk /secret/path is gone") for _ in calls]


def body(*events, **extra) -> bytes:
    return json.dumps({"events": list(events), **extra}).encode()


CASES = [  # (body, content type); the same sequence goes to both apps
    (body(EVENT), b"application/json"),
    (body(EVENT), b"application/json"),  # a retry: duplicate
    (body({**EVENT, "event_id": "e2", "item": "i2"}, {**EVENT, "user": "u1", "event_id": "e3"}), b"application/json"),
    (body({**EVENT, "event_id": "e4", "timestamp": 7}), b"Application/JSON; charset=utf-8"),
    (body({**EVENT, "event_id": "e5", "timestamp": "8.5"}), b"application/json"),  # lax float, as pydantic
    (body({**EVENT, "item": "i9"}), b"application/json"),  # 409: e1 taken by another event
    (body({**EVENT, "item": "nope", "event_id": "e6"}), b"application/json"),  # 422 unknown_item
    (body({**EVENT, "user": "bad id!"}), b"application/json"),  # 422 invalid_request (pattern)
    (body(), b"application/json"),  # 422: no event
    (body(EVENT, extra=1), b"application/json"),  # 422: extra field
    (b'{"events": [{"user": "u0", "item": "i1", "timestamp": NaN, "event_id": "n1"}]}', b"application/json"),
    (b"{not json", b"application/json"),
    (b"", b"application/json"),
    (b"\xff\xfe", b"application/json"),
    (body({**EVENT, "event_id": "e7"}), b"text/plain"),
    (body({**EVENT, "event_id": "e8"}), None),
    (body(*[{**EVENT, "event_id": f"m{n}"} for n in range(5)]), b"application/json"),  # 413: max_events=4
    (json.dumps([EVENT]).encode(), b"application/json"),
]


@pytest.mark.parametrize("chunks", [1, 3])
def test_plain_route_answers_like_fastapi(tmp_path, chunks):
    answers = {}
    for plain in (True, False):
        engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / f"{plain}-{chunks}.db"))
        app = create_app(engine, limits=Limits(max_events=4), plain_events=plain)
        answers[plain] = [call(app, b, ct, chunks=chunks) for b, ct in CASES]
    for case, plain, reference in zip(CASES, answers[True], answers[False]):
        assert plain == reference, case
    statuses = [status for status, _, _ in answers[True]]
    assert statuses == [200, 200, 200, 200, 200, 409, 422, 422, 422, 422, 422, 422, 422, 422, 422, 422, 413, 422]
    assert json.loads(answers[True][1][2]) == {"recorded": 0, "duplicates": 1}


def test_plain_route_store_failure_and_auth_like_fastapi(tmp_path):
    tokens = Tokens.parse(f"write:{WRITE}\nread:{READ}", "test")
    answers = {}
    for plain in (True, False):
        engine = Engine(tiny_recommender("gdn"), FailingStore(tmp_path / f"{plain}.db"))
        app = create_app(engine, tokens=tokens, plain_events=plain)
        answers[plain] = [call(app, body(EVENT), token=t) for t in (WRITE, READ, None)]
    assert answers[True] == answers[False]
    assert [a[0] for a in answers[True]] == [503, 403, 401]
    assert (b"retry-after", b"1") in answers[True][0][1] and b"secret" not in answers[True][0][2]


def test_plain_route_takes_valid_bodies_and_passes_the_rest_on(tmp_path):
    """Valid JSON bodies never reach FastAPI; everything else reaches it with its body intact."""
    engine = Engine(tiny_recommender("gdn"), SQLiteStore(tmp_path / "s.db"))
    passed = []

    async def fallback(scope, receive, send):
        message = await receive()
        passed.append(message["body"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def record(call):
        request, deadline = call
        result = engine.record([Event(e.user, e.item, e.timestamp, e.event_id) for e in request.events], deadline)
        return {"recorded": result.recorded, "duplicates": result.duplicates}

    async def submit(call):
        return record(call)

    route = EventsRoute(fallback, submit, Answers(Metrics(), "sqlite"))
    for b, content_type in CASES:
        call(route, b, content_type)
    valid = [b for b, ct in CASES[:7] if ct is not None] + [CASES[16][0]]  # parsed, validated: answered here
    assert passed == [b for b, _ in CASES if b not in valid]

