"""What every reader returns (`Interactions`) and the field parsers they share.

A parser takes one token with its file and line, and raises `DataFormatError` naming both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...errors import DataError, DataFormatError

log = logging.getLogger(__name__)


@dataclass
class Interactions:
    """Raw events in file order: user/item ids as str arrays and optional timestamps.

    Integer id arrays (e.g. from the synthetic generator) are turned into their decimal text, so
    every consumer sees one id type.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    source: str
    notes: list[str] = field(default_factory=list)
    ratings: np.ndarray | None = None  # float64 per event, where the file has a rating column (data.min_rating)

    def __post_init__(self) -> None:
        self.users = as_tokens(self.users, self.source, "user")
        self.items = as_tokens(self.items, self.source, "item")
        if len(self.users) != len(self.items) or (
                self.timestamps is not None and len(self.timestamps) != len(self.users)):
            raise DataError(f"{self.source}: users, items and timestamps differ in length")

    def __len__(self) -> int:
        return len(self.users)


def as_tokens(values: object, source: str, what: str) -> np.ndarray:
    """Ids → a numpy str array; integers become decimal text, anything else is refused."""
    array = np.asarray(values)
    if array.size == 0:
        return np.empty(0, dtype=str)
    if array.dtype.kind == "U":
        return array
    if array.dtype.kind in "iu":
        return array.astype(str)
    if array.dtype.kind == "O":
        tokens = [value for value in array.tolist() if isinstance(value, str)
                  or (isinstance(value, int) and not isinstance(value, bool))]
        if len(tokens) == array.size:
            return np.asarray([str(value) for value in tokens], dtype=str)
    raise DataError(f"{source}: {what} ids must be strings or integers, got {array.dtype}")


def note(notes: list[str], source: object, message: str, level: int = logging.WARNING) -> None:
    """Record something skipped or assumed, and log it, so that nothing is dropped silently."""
    notes.append(message)
    log.log(level, "%s: %s", source, message)


def _show(text: str, limit: int = 40) -> str:
    """A token for an error message: quoted, escaped to one line, shortened."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


# ---- fields ----------------------------------------------------------------------------
def _id(token: str, path: Path, number: int, what: str) -> str:
    token = token.strip()
    if not token:
        raise DataFormatError(path, number, f"empty {what} id")
    return token


def parse_rating(token: str, path: Path, number: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise DataFormatError(path, number, f"rating {_show(token)} is not a number") from None
    if not np.isfinite(value):
        raise DataFormatError(path, number, f"rating {_show(token)} must be finite")
    return value


def parse_time(token: str, path: Path, number: int) -> float:
    """A unix time in seconds from a number or an ISO date (naive dates are UTC)."""
    token = token.strip()
    try:
        value = float(token)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(token)
        except ValueError:
            raise DataFormatError(path, number,
                                  f"timestamp {_show(token)} is neither a number nor an ISO date") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        value = parsed.timestamp()
    if not np.isfinite(value) or value < 0:
        raise DataFormatError(path, number, f"timestamp {_show(token)} must be a finite number ≥ 0")
    return value


def _finish(path: Path, users: list[str], items: list[str], times: list[float] | None,
            notes: list[str], ratings: list[float] | None = None) -> Interactions:
    if not users:
        raise DataFormatError(path, None, "no interactions found (empty file?)")
    return Interactions(
        users=np.asarray(users, dtype=str),
        items=np.asarray(items, dtype=str),
        timestamps=None if times is None else np.asarray(times, dtype=np.float64),
        source=str(path),
        notes=notes,
        ratings=None if ratings is None else np.asarray(ratings, dtype=np.float64),
    )
