"""Line-oriented readers: whitespace-separated (SASRec, S3-Rec), MovieLens `::` and JSON lines."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import numpy as np

from ...errors import DataFormatError
from .lines import _lines
from .records import Interactions, _finish, _id, _show, note, parse_rating, parse_time
from .tabular import _mapping

log = logging.getLogger(__name__)


# ---- whitespace-separated: SASRec and S3-Rec --------------------------------------------
def decide_shape(path: Path, numbers: list[int], widths: list[int]) -> str:
    """'sasrec' if every line has 2 fields, 's3rec' if every line has more; a mix is refused.

    Guessing would be wrong either way: one stray 3-field line in a `user item` file would
    otherwise turn the whole file into a different data set.
    """
    more = np.asarray(widths) > 2
    change = np.flatnonzero(more != more[0])
    if change.size == 0:
        return "s3rec" if more[0] else "sasrec"
    first = int(change[0])
    start, end = numbers[0], numbers[first - 1]
    lines = f"line {start} has" if start == end else f"lines {start}-{end} have"
    kind = "more than 2 fields" if more[0] else "2 fields"
    n_more = int(more.sum())
    raise DataFormatError(
        path, numbers[first],
        f"mixed field counts: {lines} {kind}, line {numbers[first]} has {widths[first]} "
        f"({len(widths) - n_more} line(s) with 2 fields, {n_more} with more); a 'user item' file "
        "(format 'sasrec') has 2 on every line: fix the file, or set format 's3rec' if it is "
        "'user item item …'")


SHAPES = {"sasrec": "'user item' (2 fields)", "s3rec": "'user item [item …]' (at least 2 fields)",
          "auto": "'user item' or 'user item item …' (at least 2 whitespace-separated fields)"}


def read_fields(path: Path, fmt: str = "auto") -> Interactions:
    """`user item` (sasrec) or `user item item …` (s3rec) lines; 'auto' decides from field counts."""
    notes: list[str] = []
    users: list[str] = []
    items: list[str] = []
    numbers: list[int] = []
    widths: list[int] = []
    for number, line in _lines(path, notes):
        parts = line.split()
        width = len(parts)
        if width != 2 and (width < 2 or fmt == "sasrec"):
            hint = "; for 'user item item …' use format 's3rec'" if width > 2 else ""
            raise DataFormatError(path, number, f"expected {SHAPES[fmt]}, got {width} field(s){hint}")
        numbers.append(number)
        widths.append(width)
        users.extend([parts[0]] * (width - 1))
        items.extend(parts[1:])
    if fmt == "auto" and users:
        fmt = decide_shape(path, numbers, widths)
        log.info("%s: read as format '%s' (%s)", path, fmt, SHAPES[fmt])
        if fmt == "s3rec" and len(widths) >= 10 and min(widths) == max(widths):
            note(notes, path, f"every line has {widths[0]} fields: read as 'user item item …' (s3rec); "
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
    users, items, times, ratings = [], [], [], []
    for number, line in _lines(path, notes):
        parts = line.strip().split("::")
        if len(parts) != 4:
            raise DataFormatError(path, number,
                                  f"expected 'UserID::MovieID::Rating::Timestamp', got {_show(line.strip())}")
        users.append(_id(parts[0], path, number, "user"))
        items.append(_id(parts[1], path, number, "item"))
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
    users, items, times = [], [], []
    # a mapped timestamp is required on every record; the default one only if the first has it
    timed = None if "timestamp" in optional else bool(cols.get("timestamp"))
    for number, line in _lines(path, notes):
        record = _record(line, path, number)
        users.append(_json_id(_field(record, cols["user"], "user", path, number), path, number, "user"))
        items.append(_json_id(_field(record, cols["item"], "item", path, number), path, number, "item"))
        if timed is None:
            timed = cols["timestamp"] in record
        if timed:
            times.append(_json_time(_field(record, cols["timestamp"], "timestamp", path, number), path, number))
    return _finish(path, users, items, times if timed else None, notes)
