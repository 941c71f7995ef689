"""The HTTP layer: FastAPI routes that validate, call the engine, and map its errors to status codes.

Routes that touch the model or the store are plain `def` functions: FastAPI runs them in its thread
pool, so a model step or a store commit never blocks the event loop (/healthz is async: it answers
even when every thread is busy). Auth, body size and admission are plain ASGI layers (asgi.py)
around the app; a valid POST /v1/events is answered by a plain ASGI route in front of FastAPI's
(events_route.py), the hot path. Error bodies are always {"error": {"code", "message"}}, from one
table of errors (answers.py).
"""

from __future__ import annotations

from fastapi import FastAPI, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .answers import TABLE, Answers, error_body
from .asgi import Admit, Authenticate, LimitBody, Observe
from .auth import Tokens
from .engine import Engine
from .events_route import EventsRoute
from .limits import Limits, TooLarge, check_deadline
from .metrics import Metrics
from .pipeline import Pipeline
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
from .stores import Event

JSON = "application/json"
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)}


def create_app(engine: Engine | None, *, tokens: Tokens | None = None, limits: Limits | None = None,
               open_metrics: bool = False, metrics_dir: str | None = None, plain_events: bool = True) -> FastAPI:
    """The app over one engine, wrapped in its ASGI layers; `engine=None` builds it only for its schema.

    `tokens=None` serves without auth (the loopback default; server.py refuses it on other hosts).
    `metrics_dir`: the directory the worker processes of one server share, so that /metrics reports
    the whole server (metrics.py); None: this process alone. `plain_events`: valid POST /v1/events
    calls are answered by the plain ASGI route (events_route.py); False: by the FastAPI route alone.
    """
    limits = limits or Limits()
    app = FastAPI(title="sinkrec serve", version="1",
                  description="Streaming recommendations with durable per-user state (docs/serving.md).")
    metrics = Metrics(engine, directory=metrics_dir)
    app.state.engine, app.state.metrics = engine, metrics
    app.router.on_shutdown.append(metrics.close)
    store_kind = engine.store.kind if engine is not None else "none"

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors())
        shown = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in errors[:5])
        return Response(error_body("invalid_request", shown or "invalid request"), 422, media_type=JSON)

    answers = Answers(metrics, store_kind)

    async def answer(request: Request, exc: Exception) -> Response:
        status, body, headers = answers.answer(exc)
        return Response(body, status, headers, media_type=JSON)

    for error in TABLE:
        app.add_exception_handler(error, answer)

    def recorded(result) -> dict:
        metrics.events.labels("recorded").inc(result.recorded)
        metrics.events.labels("duplicate").inc(result.duplicates)
        return EventsResponse(recorded=result.recorded, duplicates=result.duplicates).model_dump()

    def record_calls(calls: list[tuple[EventsRequest, float | None]]) -> list:
        """What POST /v1/events does with valid bodies (each its own call, answered with its dict or its
        error), whichever route took them: the plain route passes a group, FastAPI's one call."""
        out, todo = [], []
        for body, deadline in calls:
            try:
                limits.check_events(len(body.events))
            except TooLarge as exc:
                out.append(exc)
                continue
            out.append(None)
            todo.append(([Event(e.user, e.item, e.timestamp, e.event_id) for e in body.events], deadline))
        done = iter(engine.record_calls(todo) if todo else [])
        return [result if result is not None else _answer(next(done)) for result in out]

    def _answer(result):
        return result if isinstance(result, BaseException) else recorded(result)

    def record(body: EventsRequest, deadline: float | None) -> dict:
        answer = record_calls([(body, deadline)])[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @app.post("/v1/events", response_model=EventsResponse, responses=ERRORS,
              summary="Record events; each user's state is updated before the answer")
    def post_events(body: EventsRequest, request: Request) -> EventsResponse:
        return EventsResponse(**record(body, request.state.deadline))

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=ERRORS,
              summary="Top-k items for stored users or explicit histories (a batch of queries)")
    def post_recommend(body: RecommendRequest, request: Request) -> RecommendResponse:
        limits.check_recommend(body.requests)
        results, deadline = [], request.state.deadline
        for q in body.requests:
            check_deadline(deadline)
            out = engine.recommend(user=q.user, history=q.history, timestamps=q.timestamps, k=q.k,
                                   filter_seen=q.filter_seen, exclude=q.exclude, deadline=deadline)
            results.append(Recommendation(user=q.user, items=out["items"], scores=out["scores"]))
        return RecommendResponse(checkpoint=engine.checkpoint, results=results)

    @app.get("/v1/users/{user}", response_model=UserInfo, responses=ERRORS, summary="A user's stored state")
    def get_user(user: str = Path(min_length=1, max_length=128, pattern=ID_PATTERN)) -> UserInfo:
        return UserInfo(**engine.user_info(user))

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorResponse}}, summary="Model loaded and store reachable")
    def readyz() -> dict:
        engine.ready()
        return {"status": "ready", "checkpoint": engine.checkpoint, "store": store_kind}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # add_middleware puts each layer outside the previous one: Observe ends up outermost.
    if plain_events and engine is not None:
        pipeline = Pipeline(record_calls)  # one thread runs the calls in groups (pipeline.py)
        app.router.on_shutdown.append(pipeline.close)
        app.add_middleware(EventsRoute, submit=pipeline.submit, answers=answers)
    app.add_middleware(Admit, limits=limits)
    app.add_middleware(LimitBody, max_bytes=limits.max_body_bytes)
    app.add_middleware(Authenticate, tokens=tokens, open_metrics=open_metrics)
    app.add_middleware(Observe, metrics=metrics)
    return app


def openapi_schema() -> dict:
    return create_app(None).openapi()
