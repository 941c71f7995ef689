"""What every reader returns (`Interactions`) and the field parsers they share.

A parser takes one token with its file and line, and raises `DataFormatError` naming both.
"""

from __future__ import annotations

import logging
from array import array
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...errors import DataError, DataFormatError

log = logging.getLogger(__name__)


BUFFER = 1 << 14  # codes appended here, then moved into the numpy array in one step


class Ids:
    """Interns id tokens as they are read: each distinct token gets the next int32 code.

    A file of many events then costs 4 bytes per event plus one string per distinct id, instead
    of one fixed-width numpy string per event (one 500-character id would widen every row).
    Codes gather in a small buffer, then in one numpy array that grows in place (a large block is
    remapped by realloc, not copied), so reading never holds two copies of them.
    """

    __slots__ = ("buffer", "codes", "index", "size")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.buffer = array("i")
        self.codes = np.empty(0, dtype=np.int32)  # codes[:size] are filled
        self.size = 0

    def add(self, token: str, repeat: int = 1) -> None:
        code = self.index.get(token)
        if code is None:
            code = self.index[token] = len(self.index)
        buffer = self.buffer
        if repeat == 1:
            buffer.append(code)
        else:
            buffer.extend([code] * repeat)
        if len(buffer) >= BUFFER:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        end = self.size + len(self.buffer)
        if not len(self.codes):  # a fresh large block: malloc maps it on its own, so realloc can remap it
            self.codes = np.empty(max(end, 1 << 20), dtype=np.int32)
        elif end > len(self.codes):  # by 1/4: resize zero-fills, so spare room is resident memory
            self.codes.resize(max(end, len(self.codes) * 5 // 4), refcheck=False)
        self.codes[self.size:end] = np.frombuffer(self.buffer, dtype=np.int32)
        self.size, self.buffer = end, array("i")

    def __len__(self) -> int:
        return self.size + len(self.buffer)

    def take(self) -> np.ndarray:
        """All codes as one int32 array, trimmed in place; the Ids is empty afterwards."""
        self._flush()
        codes, self.codes = self.codes, np.empty(0, dtype=np.int32)
        codes.resize(self.size, refcheck=False)
        self.size = 0
        return codes

    def vocab(self) -> list[str]:
        return list(self.index)  # dicts keep insertion order: position == code


def intern(tokens: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(int32 code per token, distinct tokens) for a str array."""
    if tokens.size == 0:
        return np.empty(0, dtype=np.int32), []
    vocab, codes = np.unique(tokens, return_inverse=True)
    return codes.reshape(-1).astype(np.int32), vocab.tolist()


class Interactions:
    """Raw events in file order: user/item ids as codes into their distinct tokens, optional timestamps.

    `users` and `items` give the tokens per event as str arrays (built on request: readers and
    `build_store` work on the codes). Integer id arrays (e.g. from the synthetic generator) are
    turned into their decimal text, so every consumer sees one id type.
    """

    def __init__(self, users: object, items: object, timestamps: np.ndarray | None, source: str,
                 notes: list[str] | None = None, ratings: np.ndarray | None = None) -> None:
        user_codes, user_vocab = intern(as_tokens(users, source, "user"))
        item_codes, item_vocab = intern(as_tokens(items, source, "item"))
        self._set(user_codes, user_vocab, item_codes, item_vocab, timestamps, source, notes, ratings)

    @classmethod
    def from_codes(cls, user_codes: np.ndarray, user_vocab: list[str], item_codes: np.ndarray,
                   item_vocab: list[str], timestamps: np.ndarray | None, source: str,
                   notes: list[str] | None = None, ratings: np.ndarray | None = None) -> Interactions:
        events = cls.__new__(cls)
        events._set(user_codes, user_vocab, item_codes, item_vocab, timestamps, source, notes, ratings)
        return events

    def _set(self, user_codes, user_vocab, item_codes, item_vocab, timestamps, source, notes, ratings) -> None:
        self.user_codes, self.user_vocab = np.asarray(user_codes), list(user_vocab)
        self.item_codes, self.item_vocab = np.asarray(item_codes), list(item_vocab)
        self.timestamps, self.ratings = timestamps, ratings  # float64 per event, or None
        self.source, self.notes = source, list(notes or [])
        n = len(self.user_codes)
        if len(self.item_codes) != n or any(x is not None and len(x) != n for x in (timestamps, ratings)):
            raise DataError(f"{source}: users, items, timestamps and ratings differ in length")

    @property
    def users(self) -> np.ndarray:
        return _tokens(self.user_vocab, self.user_codes)

    @property
    def items(self) -> np.ndarray:
        return _tokens(self.item_vocab, self.item_codes)

    def select(self, keep: np.ndarray) -> Interactions:
        """The events where `keep` is true (same vocabularies)."""
        return Interactions.from_codes(self.user_codes[keep], self.user_vocab, self.item_codes[keep],
                                       self.item_vocab, _maybe(self.timestamps, keep), self.source, self.notes,
                                       _maybe(self.ratings, keep))

    def __len__(self) -> int:
        return len(self.user_codes)


def _maybe(values: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[keep]


def _tokens(vocab: list[str], codes: np.ndarray) -> np.ndarray:
    if len(codes) == 0:
        return np.empty(0, dtype=str)
    return np.asarray(vocab, dtype=str)[codes]


def as_tokens(values: object, source: str, what: str) -> np.ndarray:
    """Ids → a numpy str array; integers become decimal text, anything else is refused."""
    array_ = np.asarray(values)
    if array_.size == 0:
        return np.empty(0, dtype=str)
    if array_.dtype.kind == "U":
        return array_
    if array_.dtype.kind in "iu":
        return array_.astype(str)
    if array_.dtype.kind == "O":
        tokens = [value for value in array_.tolist() if isinstance(value, str)
                  or (isinstance(value, int) and not isinstance(value, bool))]
        if len(tokens) == array_.size:
            return np.asarray([str(value) for value in tokens], dtype=str)
    raise DataError(f"{source}: {what} ids must be strings or integers, got {array_.dtype}")


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


def _finish(path: Path, users: Ids, items: Ids, times: array | None, notes: list[str],
            ratings: array | None = None) -> Interactions:
    """The events read, as codes (the float columns share memory with the readers' buffers)."""
    if not len(users):
        raise DataFormatError(path, None, "no interactions found (empty file?)")
    return Interactions.from_codes(users.take(), users.vocab(), items.take(), items.vocab(),
                                   _floats(times), str(path), notes, _floats(ratings))


def _floats(values: array | None) -> np.ndarray | None:
    return None if values is None else np.frombuffer(values, dtype=np.float64)
