"""Line-oriented readers: whitespace-separated (SASRec, S3-Rec), MovieLens `::` and JSON lines."""

from __future__ import annotations

import ast
import json
import logging
from array import array
from pathlib import Path

from ...errors import DataFormatError
from .lines import _lines
from .records import Ids, Interactions, _finish, _id, _show, note, parse_rating, parse_time
from .tabular import _mapping

log = logging.getLogger(__name__)


# ---- whitespace-separated: SASRec and S3-Rec --------------------------------------------
class Shapes:
    """A running tally of fields per line: enough to tell 'sasrec' from 's3rec' and to explain a mix,
    without keeping a number per line."""

    def __init__(self) -> None:
        self.lines = self.more = 0
        self.start = self.end = 0  # the first run of lines of one kind
        self.first_more: bool | None = None
        self.change: tuple[int, int] | None = None  # (line, fields) of the first line of the other kind
        self.low = self.high = 0

    def add(self, number: int, width: int) -> None:
        more = width > 2
        if self.first_more is None:
            self.first_more, self.start, self.low, self.high = more, number, width, width
        elif self.change is None and more != self.first_more:
            self.change = (number, width)
        self.low, self.high = min(self.low, width), max(self.high, width)
        if self.change is None:
            self.end = number
        self.lines += 1
        self.more += more

    def decide(self, path: Path) -> str:
        """'sasrec' if every line has 2 fields, 's3rec' if every line has more; a mix is refused.

        Guessing would be wrong either way: one stray 3-field line in a `user item` file would
        otherwise turn the whole file into a different data set.
        """
        if self.change is None:
            return "s3rec" if self.first_more else "sasrec"
        number, width = self.change
        lines = f"line {self.start} has" if self.start == self.end else f"lines {self.start}-{self.end} have"
        kind = "more than 2 fields" if self.first_more else "2 fields"
        raise DataFormatError(
            path, number,
            f"mixed field counts: {lines} {kind}, line {number} has {width} "
            f"({self.lines - self.more} line(s) with 2 fields, {self.more} with more); a 'user item' file "
            "(format 'sasrec') has 2 on every line: fix the file, or set format 's3rec' if it is "
            "'user item item …'")


def decide_shape(path: Path, numbers: list[int], widths: list[int]) -> str:
    """`Shapes.decide` for lists of line numbers and their field counts (lines with ≥ 2 fields)."""
    shapes = Shapes()
    for number, width in zip(numbers, widths):
        shapes.add(number, width)
    return shapes.decide(path)


SHAPES = {"sasrec": "'user item' (2 fields)", "s3rec": "'user item [item …]' (at least 2 fields)",
          "auto": "'user item' or 'user item item …' (at least 2 whitespace-separated fields)"}


def read_fields(path: Path, fmt: str = "auto") -> Interactions:
    """`user item` (sasrec) or `user item item …` (s3rec) lines; 'auto' decides from field counts."""
    notes: list[str] = []
    users, items, shapes = Ids(), Ids(), Shapes()
    add_user, add_item = users.add, items.add
    for number, line in _lines(path, notes):
        parts = line.split()
        width = len(parts)
        if width != 2 and (width < 2 or fmt == "sasrec"):
            hint = "; for 'user item item …' use format 's3rec'" if width > 2 else ""
            raise DataFormatError(path, number, f"expected {SHAPES[fmt]}, got {width} field(s){hint}")
        shapes.add(number, width)
        add_user(parts[0], width - 1)
        for token in parts[1:]:
            add_item(token)
    if fmt == "auto" and len(users):
        fmt = shapes.decide(path)
        log.info("%s: read as format '%s' (%s)", path, fmt, SHAPES[fmt])
        if fmt == "s3rec" and shapes.lines >= 10 and shapes.low == shapes.high:
            note(notes, path, f"every line has {shapes.low} fields: read as 'user item item …' (s3rec); "
                              "for a table such as user, item, rating, time use format 'csv'")
    return _finish(path, users, items, None, notes)


def read_sasrec(path: Path) -> Interactions:
    """`user item` per line, lines grouped by user in chronological order (SASRec files)."""
    return read_fields(path, "sasrec")


def read_s3rec(path: Path) -> Interactions:
    """`user item item …` one user per line, chronological (S3-Rec files)."""
    return read_fields(path, "s3rec")


def read_movielens_dat(path: Path) -> Interactions:
    """MovieLens `UserID::MovieID::Rating::Timestamp` (ratings.dat, optionally gzipped)."""
    notes: list[str] = []
    users, items, times, ratings = Ids(), Ids(), array("d"), array("d")
    for number, line in _lines(path, notes):
        parts = line.strip().split("::")
        if len(parts) != 4:
            raise DataFormatError(path, number,
                                  f"expected 'UserID::MovieID::Rating::Timestamp', got {_show(line.strip())}")
        users.add(_id(parts[0], path, number, "user"))
        items.add(_id(parts[1], path, number, "item"))
        times.append(parse_time(parts[3], path, number))
        ratings.append(parse_rating(parts[2], path, number))
    return _finish(path, users, items, times, notes, ratings)


# ---- JSON lines --------------------------------------------------------------------------
def _record(line: str, path: Path, number: int) -> dict:
    """One JSON object, or a Python literal dict as in the Steam dump."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        try:
            record = ast.literal_eval(line.strip())
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            raise DataFormatError(path, number, "expected one JSON object per line") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, number, f"expected one JSON object per line, got {type(record).__name__}")
    return record


def _field(record: dict, name: str, key: str, path: Path, number: int) -> object:
    if name not in record:
        raise DataFormatError(path, number, f"field {_show(name)} ({key}) missing")
    return record[name]


def _json_id(value: object, path: Path, number: int, what: str) -> str:
    """Strings are kept (stripped); integers become decimal text; anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(path, number, f"{what} id must be a string or an integer, "
                                            f"got {type(value).__name__}")
    try:
        token = str(value).strip()
    except ValueError:  # an integer too long to print
        raise DataFormatError(path, number, f"{what} id is an integer with too many digits") from None
    if not token or "\x00" in token:
        raise DataFormatError(path, number, f"{what} id {_show(token)} is empty or has a NUL character")
    return token


def _json_time(value: object, path: Path, number: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataFormatError(path, number, f"timestamp must be a number or a date, got {type(value).__name__}")
    if isinstance(value, str):
        return parse_time(value, path, number)
    try:
        return parse_time(repr(float(value)), path, number)
    except OverflowError:
        raise DataFormatError(path, number, "timestamp is too large") from None


def read_jsonl(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """One JSON (or Python-literal, as in the Steam dump) object per line, with a field mapping."""
    cols, optional = _mapping(columns)
    notes: list[str] = []
    users, items, times = Ids(), Ids(), array("d")
    # a mapped timestamp is required on every record; the default one only if the first has it
    timed = None if "timestamp" in optional else bool(cols.get("timestamp"))
    for number, line in _lines(path, notes):
        record = _record(line, path, number)
        users.add(_json_id(_field(record, cols["user"], "user", path, number), path, number, "user"))
        items.add(_json_id(_field(record, cols["item"], "item", path, number), path, number, "item"))
        if timed is None:
            timed = cols["timestamp"] in record
        if timed:
            times.append(_json_time(_field(record, cols["timestamp"], "timestamp", path, number), path, number))
    return _finish(path, users, items, times if timed else None, notes)
