"""Tabular readers: delimited text with or without a header (CSV, TSV, RecBole `.inter`,
MovieLens `ratings.csv`) and Parquet."""

from __future__ import annotations

import csv
import logging
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...errors import DataFormatError
from .lines import first_line, text_lines
from .records import Ids, Interactions, _finish, _id, _show, note, parse_rating, parse_time

log = logging.getLogger(__name__)


# ---- delimited text ---------------------------------------------------------------------
def _csv_rows(path: Path, delimiter: str, notes: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records with the number of their last line; blank lines are counted."""
    # the line break goes back in: csv needs it inside a quoted field that spans lines
    reader = csv.reader((line + "\n" for _, line in text_lines(path)), delimiter=delimiter, strict=True)
    blank = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataFormatError(path, reader.line_num, f"malformed CSV: {exc}") from None
        if not row or (len(row) == 1 and not row[0].strip()):
            blank += 1
            continue
        yield reader.line_num, row
    if blank:
        note(notes, path, f"skipped {blank} blank line(s)", logging.INFO)


def _header_index(path: Path, rows: Iterator[tuple[int, list[str]]], want: dict[str, str],
                  optional: set[str], type_suffix: bool) -> tuple[dict[str, int], int, int]:
    """Column index per key from the header line; `optional` keys absent from it are left out."""
    try:
        number, names = next(rows)
    except StopIteration:
        raise DataFormatError(path, None, "empty file (expected a header line)") from None
    names = [name.strip() for name in names]
    if type_suffix:
        names = [name.split(":")[0] for name in names]
    index = {}
    for key, name in want.items():
        if name in names:
            index[key] = names.index(name)
        elif key not in optional:
            raise DataFormatError(path, number, f"unknown column {_show(name)} for {key}; header has {names}")
    return index, len(names), number


def _read_delimited(path: Path, columns: dict[str, str], delimiter: str, header: bool | None,
                    type_suffix: bool = False, optional: frozenset[str] = frozenset()) -> Interactions:
    """Delimited text with a header (names) or without (0-based column indices).

    Every record must have as many fields as the header (or the first record): a shifted
    column would otherwise be read as the wrong id without any sign.
    """
    notes: list[str] = []
    want = {key: str(columns[key]) for key in ("user", "item", "timestamp", "rating")
            if columns.get(key) is not None}
    for key in ("user", "item"):
        if key not in want:
            raise DataFormatError(path, None, f"column mapping lacks '{key}' (got {sorted(columns)})")
    positional = all(v.isdigit() for v in want.values()) if header is None else not header
    rows = _csv_rows(path, delimiter, notes)
    width, reference = None, 0
    if positional:
        index = {key: int(value) for key, value in want.items()}
    else:
        index, width, reference = _header_index(path, rows, want, set(optional), type_suffix)
    users, items, times, ratings = Ids(), Ids(), array("d"), array("d")
    for number, row in rows:
        if width is None:
            width, reference = len(row), number
            if width <= max(index.values()):
                raise DataFormatError(path, number, f"expected at least {max(index.values()) + 1} fields, "
                                                    f"got {width}")
        if len(row) != width:
            raise DataFormatError(path, number, f"expected {width} fields (as on line {reference}), "
                                                f"got {len(row)}")
        users.add(_id(row[index["user"]], path, number, "user"))
        items.add(_id(row[index["item"]], path, number, "item"))
        if "timestamp" in index:
            times.append(parse_time(row[index["timestamp"]], path, number))
        if "rating" in index:
            ratings.append(parse_rating(row[index["rating"]], path, number))
    return _finish(path, users, items, times if "timestamp" in index else None, notes,
                   ratings if "rating" in index else None)


DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}


def _mapping(columns: dict[str, str] | None) -> tuple[dict[str, str], frozenset[str]]:
    """The column mapping, and which keys may be absent (only the default timestamp)."""
    if columns:
        return dict(columns), frozenset()
    return dict(DEFAULT_COLUMNS), frozenset({"timestamp", "rating"})


def read_recbole_inter(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """RecBole atomic `.inter`: TSV with a typed header (`user_id:token item_id:token …`)."""
    cols = dict(DEFAULT_COLUMNS)
    cols.update(columns or {})
    optional = frozenset({"timestamp", "rating"} - set(columns or {}))
    return _read_delimited(path, cols, "\t", header=True, type_suffix=True, optional=optional)


def read_movielens_csv(path: Path) -> Interactions:
    """MovieLens `ratings.csv` (userId,movieId,rating,timestamp with a header)."""
    return _read_delimited(path, {"user": "userId", "item": "movieId", "timestamp": "timestamp", "rating": "rating"},
                           ",", header=True)


# Header names recognised (case-insensitively) when no mapping is given, most specific first.
HEADER_NAMES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "userid", "user", "uid"),
    "item": ("item_id", "itemid", "movieid", "product_id", "productid", "item", "iid"),
    "timestamp": ("timestamp", "datetime", "time", "ts", "date"),
    "rating": ("rating",),
}


def recognise_columns(path: Path, names: list[str], number: int) -> dict[str, str]:
    """user/item/[timestamp, rating] → header name, from common names such as `userId` or `movieId`.

    The choice is logged; a header without a recognisable user or item column is an error that
    says how to map the columns by hand.
    """
    lowered: dict[str, str] = {}
    for name in names:
        lowered.setdefault(name.strip().lower(), name.strip())
    chosen = {}
    for key, candidates in HEADER_NAMES.items():
        found = next((lowered[c] for c in candidates if c in lowered), None)
        if found is not None:
            chosen[key] = found
    missing = [key for key in ("user", "item") if key not in chosen]
    if missing:
        known = "; ".join(f"{key}: {', '.join(HEADER_NAMES[key])}" for key in missing)
        raise DataFormatError(path, number, f"no {' or '.join(missing)} column in the header "
                                            f"{_show(str(names), 80)} (recognised names, any case: {known}); map "
                                            "the columns with data.columns, e.g. {user: NAME, item: NAME}, or "
                                            "0-based indices for a file without a header")
    log.info("%s: columns chosen from the header: %s", path,
             ", ".join(f"{key}={name!r}" for key, name in chosen.items()))
    return chosen


def read_csv(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """Generic CSV/TSV (tab if the first line has one): `columns` maps user/item/[timestamp] to
    header names, or to 0-based indices for a file without a header. Without a mapping, the
    header's columns are recognised by common names (`recognise_columns`)."""
    head = first_line(path)
    delimiter = "\t" if "\t" in head else ","
    if columns:
        return _read_delimited(path, dict(columns), delimiter, header=None)
    rows = _csv_rows(path, delimiter, [])
    number, names = next(rows, (None, None))
    if names is None:
        raise DataFormatError(path, None, "empty file (expected a header line)")
    rows.close()
    return _read_delimited(path, recognise_columns(path, names, number), delimiter, header=True)


# ---- Parquet -----------------------------------------------------------------------------
def _parquet_ids(values: np.ndarray, path: Path, what: str) -> Ids:
    """A Parquet id column as interned tokens: integers and non-empty strings only."""
    tokens = Ids()
    for row, value in enumerate(values.tolist()):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise DataFormatError(path, None, f"row {row + 1}: {what} id is not UTF-8") from None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise DataFormatError(path, None, f"row {row + 1}: {what} id {_show(str(value))} is not a "
                                              "string or an integer")
        token = str(value).strip()
        if not token or "\x00" in token:
            raise DataFormatError(path, None, f"row {row + 1}: {what} id {_show(token)} is empty or has NUL")
        tokens.add(token)
    return tokens


def _parquet_times(column: object, path: Path) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        column = (column - pd.Timestamp(0, tz=column.dt.tz)) / pd.Timedelta(seconds=1)
    try:
        times = column.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise DataFormatError(path, None, f"timestamp column has type {column.dtype}, not numbers") from None
    bad = np.flatnonzero(~np.isfinite(times) | (times < 0))
    if bad.size:
        raise DataFormatError(path, None, f"row {bad[0] + 1}: timestamp must be a finite number ≥ 0")
    return times


def read_parquet(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """Parquet with a column mapping (needs pandas + pyarrow: `pip install sinkrec[parquet]`)."""
    try:
        import pandas as pd

        frame = pd.read_parquet(path)
    except ImportError:
        raise DataFormatError(path, None, "reading Parquet needs pandas and pyarrow "
                              "(pip install 'sinkrec[parquet]')") from None
    except Exception as exc:  # pyarrow raises many types for a damaged file; all mean the same here
        raise DataFormatError(path, None, f"cannot read Parquet: {type(exc).__name__}: {exc}") from None
    cols, optional = _mapping(columns)
    for key in ("user", "item", "timestamp"):
        if cols.get(key) is not None and cols[key] not in frame.columns and key not in optional:
            raise DataFormatError(path, None,
                                  f"unknown column '{cols[key]}' for {key}; has {list(frame.columns)}")
    if len(frame) == 0:
        raise DataFormatError(path, None, "no interactions found (empty file?)")
    times = None
    if cols.get("timestamp") in frame.columns:
        times = _parquet_times(frame[cols["timestamp"]], path)
    users = _parquet_ids(frame[cols["user"]].to_numpy(), path, "user")
    items = _parquet_ids(frame[cols["item"]].to_numpy(), path, "item")
    return Interactions.from_codes(users.take(), users.vocab(), items.take(), items.vocab(), times, str(path))
