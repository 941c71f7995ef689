"""Request and response bodies of the HTTP API (they define the committed OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

ID_PATTERN = r"^[A-Za-z0-9_.:@\-]+$"
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
MAX_EVENTS, MAX_REQUESTS, MAX_HISTORY, MAX_K = 1000, 256, 1000, 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EventIn(Strict):
    user: UserId = Field(description="the user's id (letters, digits and _ . : @ -)")
    item: ItemId = Field(description="an item id of the model's catalogue, as in the training data")
    timestamp: float = Field(description="unix time in seconds")
    event_id: EventId = Field(description="unique per user: a retry with the same id is recorded once")


class EventsRequest(Strict):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    recorded: int = Field(description="new events, durably recorded and applied")
    duplicates: int = Field(description="events already recorded (retries), ignored")


class RecommendQuery(Strict):
    user: UserId | None = Field(None, description="recommend from this user's stored state")
    history: list[ItemId] | None = Field(None, min_length=1, max_length=MAX_HISTORY,
                                         description="or from this history (oldest first), not stored")
    timestamps: list[float] | None = Field(None, description="unix times, one per history item")
    k: int = Field(10, ge=1, le=MAX_K)
    filter_seen: bool = Field(True, description="leave out items the user already interacted with")
    exclude: list[ItemId] = Field(default_factory=list, max_length=10_000,
                                  description="items never to return (unknown ids are ignored)")

    @model_validator(mode="after")
    def _one_source(self) -> RecommendQuery:
        if (self.user is None) == (self.history is None):
            raise ValueError("give exactly one of 'user' and 'history'")
        if self.timestamps is not None and (self.history is None or len(self.timestamps) != len(self.history)):
            raise ValueError("'timestamps' needs a 'history' of the same length")
        return self


class RecommendRequest(Strict):
    requests: list[RecommendQuery] = Field(min_length=1, max_length=MAX_REQUESTS)


class Recommendation(BaseModel):
    user: str | None
    items: list[str]
    scores: list[float]


class RecommendResponse(BaseModel):
    checkpoint: str = Field(description="digest of the model that produced these scores")
    results: list[Recommendation]


class UserInfo(BaseModel):
    user: str
    events: int
    checkpoint: str
    state_bytes: int


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
