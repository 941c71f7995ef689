"""POST /v1/events as a plain ASGI layer: the hot path, without FastAPI's routing and response building.

At one event per call FastAPI's own work (routing, dependency solving, response model, the anyio
thread hand-off) was about 0.45 ms of a ~1.7 ms request. This layer answers the common case itself
and hands everything else to the FastAPI route, which stays the reference and the documented API:

- taken here: a body FastAPI would parse as JSON (media type exactly application/json) that
  `json.loads` reads and `EventsRequest` validates, as FastAPI parses and validates it;
- passed on unchanged (body replayed): any other content type, bad JSON, a body that fails
  validation — so every 422 and 400 of the schema is FastAPI's own, word for word.

What it does with a valid body is the route's own function (`record_calls` in app.py, through the
pipeline of pipeline.py with SQLite), and its errors are answered from the same table (answers.py):
the same status, code, message and headers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from .answers import Answers, render
from .schemas import EventsRequest

JSON = b"application/json"


def _is_json(scope) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == JSON
    return False


class EventsRoute:
    """Answers valid JSON POSTs to /v1/events by itself (`await submit((request, deadline))`: the answer's
    dict); passes every other request to `app`. Innermost layer: LimitBody has read the body, Admit set
    the deadline."""

    def __init__(self, app, submit: Callable[[tuple[EventsRequest, float | None]], Awaitable[dict]],
                 answers: Answers):
        self.app, self.submit, self.answers = app, submit, answers

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/events" or scope["method"] != "POST" \
                or not _is_json(scope):
            return await self.app(scope, receive, send)
        messages = [await receive()]
        while messages[-1].get("more_body", False):
            messages.append(await receive())
        try:
            body = b"".join(m.get("body", b"") for m in messages)
            request = EventsRequest.model_validate(json.loads(body))
        except (ValueError, ValidationError):  # JSONDecodeError, UnicodeDecodeError: FastAPI's answer
            return await self.app(scope, _replay(messages, receive), send)
        deadline = scope.get("state", {}).get("deadline")
        try:
            status, content, headers = 200, render(await self.submit((request, deadline))), {}
        except Exception as exc:
            answer = self.answers.answer(exc)
            if answer is None:
                raise  # as FastAPI: ServerErrorMiddleware answers 500
            status, content, headers = answer
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]  # in Starlette's order
        raw += [(b"content-length", str(len(content)).encode()), (b"content-type", JSON)]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})


def _replay(messages: list[dict], receive):
    """`receive` that gives `messages` once more first."""
    pending = list(reversed(messages))

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed
