"""The HTTP layer: FastAPI routes that validate, call the engine, and map its errors to status codes.

Routes are plain `def` functions: FastAPI runs them in its thread pool, so a model step or a store
commit never blocks the event loop. Error bodies are always {"error": {"code", "message"}}.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import SinkrecError, UnknownItemError
from .engine import Engine, UnknownUserError
from .metrics import Metrics
from .schemas import (
    ID_PATTERN,
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    UserInfo,
)
from .stores import Event, EventConflict, StoreUnavailable

ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 409, 422, 503)}
ENDPOINTS = ("/v1/events", "/v1/recommend", "/healthz", "/readyz", "/metrics")


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _handler(status: int, code: str):
    """An exception handler answering `status` with `code` and the error's one-line message."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return _error(status, code, str(exc))

    return handle


def create_app(engine: Engine | None) -> FastAPI:
    """The app over one engine; `engine=None` builds it only for its OpenAPI schema."""
    app = FastAPI(title="sinkrec serve", version="1",
                  description="Streaming recommendations with durable per-user state (docs/serving.md).")
    metrics = Metrics(engine)
    app.state.engine, app.state.metrics = engine, metrics
    store_kind = engine.store.kind if engine is not None else "none"

    @app.middleware("http")
    async def observe(request: Request, call_next):
        path = request.url.path
        endpoint = path if path in ENDPOINTS else "/v1/users/{user}" if path.startswith("/v1/users/") else "other"
        start = time.perf_counter()
        response = await call_next(request)
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors())
        shown = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in errors[:5])
        return _error(422, "invalid_request", shown or "invalid request")

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable):
        metrics.store_errors.labels(store_kind).inc()
        return _error(503, "store_unavailable", str(exc), {"Retry-After": "1"})

    for error, status, code in ((UnknownItemError, 422, "unknown_item"), (UnknownUserError, 404, "unknown_user"),
                                (EventConflict, 409, "event_conflict"), (SinkrecError, 400, "bad_request")):
        app.add_exception_handler(error, _handler(status, code))

    @app.post("/v1/events", response_model=EventsResponse, responses=ERRORS,
              summary="Record events; each user's state is updated before the answer")
    def post_events(body: EventsRequest) -> EventsResponse:
        result = engine.record([Event(e.user, e.item, e.timestamp, e.event_id) for e in body.events])
        metrics.events.labels("recorded").inc(result.recorded)
        metrics.events.labels("duplicate").inc(result.duplicates)
        return EventsResponse(recorded=result.recorded, duplicates=result.duplicates)

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=ERRORS,
              summary="Top-k items for stored users or explicit histories (a batch of queries)")
    def post_recommend(body: RecommendRequest) -> RecommendResponse:
        results = []
        for q in body.requests:
            out = engine.recommend(user=q.user, history=q.history, timestamps=q.timestamps, k=q.k,
                                   filter_seen=q.filter_seen, exclude=q.exclude)
            results.append(Recommendation(user=q.user, items=out["items"], scores=out["scores"]))
        return RecommendResponse(checkpoint=engine.checkpoint, results=results)

    @app.get("/v1/users/{user}", response_model=UserInfo, responses=ERRORS, summary="A user's stored state")
    def get_user(user: str = Path(min_length=1, max_length=128, pattern=ID_PATTERN)) -> UserInfo:
        return UserInfo(**engine.user_info(user))

    @app.get("/healthz", summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorResponse}}, summary="Model loaded and store reachable")
    def readyz() -> dict:
        engine.ready()
        return {"status": "ready", "checkpoint": engine.checkpoint, "store": store_kind}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def openapi_schema() -> dict:
    return create_app(None).openapi()
