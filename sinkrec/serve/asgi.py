"""Plain ASGI middleware in front of the routes: metrics, auth, body size, admission.

Plain ASGI (no BaseHTTPMiddleware): nothing is buffered or copied that a route does not need, and
each layer answers on its own before the next one runs:

    Observe → Authenticate → LimitBody → Admit → FastAPI routes

An unauthenticated request is refused before its body is read; a body is counted as it streams
in and refused (413) at the first byte over the limit; a /v1 request waits for one of
`max_concurrency` slots, in a queue of at most `max_queue` (beyond: 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import json
import time

from .auth import Tokens, allows
from .limits import Limits

OPEN_PATHS = ("/healthz", "/readyz")
ENDPOINTS = ("/v1/events", "/v1/recommend", "/healthz", "/readyz", "/metrics")


async def send_error(send, status: int, code: str, message: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def endpoint_of(path: str) -> str:
    if path in ENDPOINTS:
        return path
    return "/v1/users/{user}" if path.startswith("/v1/users/") else "other"


class Observe:
    """Request counts and latency by endpoint and status (the outermost layer: it sees every answer)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            endpoint = endpoint_of(scope["path"])
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            self.metrics.requests.labels(endpoint, scope["method"], str(status[0])).inc()


class Authenticate:
    """`Authorization: Bearer TOKEN`: 401 without a known token, 403 when its scope is too narrow.

    POST /v1/events needs `write`; everything else `read`, except /healthz and /readyz (always open)
    and /metrics when `open_metrics`. With `tokens=None` (loopback without tokens) all is open.
    """

    def __init__(self, app, tokens: Tokens | None, open_metrics: bool = False):
        self.app, self.tokens, self.open_metrics = app, tokens, open_metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.tokens is None:
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in OPEN_PATHS or (self.open_metrics and path == "/metrics"):
            return await self.app(scope, receive, send)
        needed = "write" if path == "/v1/events" and scope["method"] == "POST" else "read"
        auth = _header(scope, b"authorization") or ""
        kind, _, token = auth.partition(" ")
        scope_of = self.tokens.scope(token.strip()) if kind.lower() == "bearer" and token.strip() else None
        if scope_of is None:
            return await send_error(send, 401, "unauthorized", "a valid `Authorization: Bearer TOKEN` header "
                                    "is required", {"WWW-Authenticate": 'Bearer realm="sinkrec"'})
        if not allows(scope_of, needed):
            return await send_error(send, 403, "forbidden", f"this token's scope ({scope_of}) does not allow "
                                    f"{scope['method']} {path} (needs {needed})")
        return await self.app(scope, receive, send)


class LimitBody:
    """Read the body (counting it as it streams) before the route runs; 413 at the first byte over."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_large = f"the request body is larger than {self.max_bytes:,} bytes (max_body_bytes)"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isascii() and declared.strip().isdigit() \
                and int(declared) > self.max_bytes:
            return await send_error(send, 413, "too_large", too_large, {"Connection": "close"})
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await send_error(send, 413, "too_large", too_large, {"Connection": "close"})
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = [False]

        async def replay():
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class Admit:
    """At most `max_concurrency` /v1 requests at once per process; up to `max_queue` wait, more get 429.

    A request's deadline (its time budget, counted from arrival) is put in scope["state"]; the
    routes stop model work past it. Waiting past it in the queue is answered 503.
    """

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits
        self.slots: asyncio.Semaphore | None = None
        self.waiting = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = time.monotonic() + self.limits.time_budget_s
        scope.setdefault("state", {})["deadline"] = deadline
        if not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        if self.slots is None:  # created in the server's event loop
            self.slots = asyncio.Semaphore(self.limits.max_concurrency)
        if self.slots.locked() and self.waiting >= self.limits.max_queue:
            return await send_error(send, 429, "overloaded", f"{self.limits.max_concurrency} requests running and "
                                    f"{self.waiting} waiting: retry later", {"Retry-After": "1"})
        if not self.slots.locked():
            await self.slots.acquire()  # a free slot: taken at once
        else:
            self.waiting += 1
            try:
                await asyncio.wait_for(self.slots.acquire(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return await send_error(send, 503, "overloaded", "waited past the time budget for a free slot: "
                                        "retry later", {"Retry-After": "1"})
            finally:
                self.waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()
