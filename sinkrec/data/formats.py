"""Readers for interaction logs. Each returns `Interactions` in file order with the user's ids.

Ids are strings end to end: a reader keeps each id exactly as the token in the file (`007` and
`7` are different items, an id longer than any integer type is fine), so recommendations come
back in the user's own tokens. Surrounding whitespace is never part of an id.

Every reader checks what it reads and raises `DataFormatError` naming the file, the line and
what was expected. Blank lines are skipped, counted in `notes` and logged; nothing else is
dropped. Files are decoded strictly as UTF-8 (a BOM is allowed), and a bad byte or a NUL is
reported with its line, column and byte offset.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import DataError, DataFormatError

log = logging.getLogger(__name__)
BOM = b"\xef\xbb\xbf"


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


# ---- lines -----------------------------------------------------------------------------
def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


CHUNK = 1 << 22  # bytes decoded at once: fast, and a big file is never held whole


def _locate(data: bytes | str, index: int, newline: bytes | str) -> tuple[int, int]:
    """(lines before `index`, 1-based column of `index`) within a block."""
    return data.count(newline, 0, index), index - data.rfind(newline, 0, index)


def _decode(block: bytes, path: Path, lines_before: int, offset: int, compressed: bool) -> str:
    """A block of whole lines as UTF-8; a bad byte or a NUL is reported with line, column, offset."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _locate(block, exc.start, b"\n")
        where = f"byte {offset + exc.start}" + (" of the uncompressed data" if compressed else "")
        hint = ""
        if lines_before + line == 0 and block[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (looks like UTF-16: convert the file to UTF-8)"
        raise DataFormatError(path, lines_before + line + 1,
                              f"not UTF-8 text: {exc.reason} at column {column} ({where}){hint}") from None
    if "\x00" in text:
        line, column = _locate(text, text.index("\x00"), "\n")
        raise DataFormatError(path, lines_before + line + 1, f"NUL character at column {column} (a binary file?)")
    return text


def _blocks(handle: IO[bytes]) -> Iterator[bytes]:
    """The stream cut into blocks that end at a line break (the last one may not)."""
    pending = b""
    while True:
        block = handle.read(CHUNK)
        if not block:
            break
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            pending += block
            continue
        yield pending + block[:cut]
        pending = block[cut:]
    if pending:
        yield pending


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Every line with its 1-based number, without its `\\n`, strictly decoded; a BOM is dropped.

    Lines end only at `\\n` (a `\\r` before it, or a stray one, stays in the line, where readers
    treat it as whitespace), so line numbers match what `wc -l` and editors show.
    """
    number = offset = 0
    compressed = path.suffix == ".gz"
    try:
        with _open_binary(path) as handle:
            for block in _blocks(handle):
                start = 0
                if offset == 0 and block.startswith(BOM):
                    log.info("%s: skipped a UTF-8 byte-order mark", path)
                    start = len(BOM)
                lines = _decode(block[start:], path, number, offset + start, compressed).split("\n")
                if not lines[-1]:
                    lines.pop()  # the block ended with a line break
                for line in lines:
                    number += 1
                    yield number, line
                offset += len(block)
    except (OSError, EOFError, zlib.error) as exc:
        where = f" after line {number}" if number else ""
        raise DataFormatError(path, None, f"cannot read the file{where}: {exc}") from None


def _lines(path: Path, notes: list[str]) -> Iterator[tuple[int, str]]:
    """Non-blank lines with 1-based numbers; blank lines are counted into `notes`."""
    blank = 0
    for number, line in text_lines(path):
        if line.strip():
            yield number, line
        else:
            blank += 1
    if blank:
        note(notes, path, f"skipped {blank} blank line(s)", logging.INFO)


def first_line(path: Path) -> str:
    """The first non-blank line (BOM and line break removed), or '' for an empty file."""
    for _, line in text_lines(path):
        if line.strip():
            return line.rstrip("\r")
    return ""


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
    users, items, times, ratings = [], [], [], []
    for number, row in rows:
        if width is None:
            width, reference = len(row), number
            if width <= max(index.values()):
                raise DataFormatError(path, number, f"expected at least {max(index.values()) + 1} fields, "
                                                    f"got {width}")
        if len(row) != width:
            raise DataFormatError(path, number, f"expected {width} fields (as on line {reference}), "
                                                f"got {len(row)}")
        users.append(_id(row[index["user"]], path, number, "user"))
        items.append(_id(row[index["item"]], path, number, "item"))
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


def read_csv(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """Generic CSV/TSV (tab if the first line has one): `columns` maps user/item/[timestamp] to
    header names, or to 0-based indices for a file without a header."""
    cols, optional = _mapping(columns)
    delimiter = "\t" if "\t" in first_line(path) else ","
    return _read_delimited(path, cols, delimiter, header=None, optional=optional)


# ---- Parquet -----------------------------------------------------------------------------
def _parquet_ids(values: np.ndarray, path: Path, what: str) -> list[str]:
    """A Parquet id column as tokens: integers and non-empty strings only."""
    tokens = []
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
        tokens.append(token)
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
    return Interactions(users=np.asarray(_parquet_ids(frame[cols["user"]].to_numpy(), path, "user"), dtype=str),
                        items=np.asarray(_parquet_ids(frame[cols["item"]].to_numpy(), path, "item"), dtype=str),
                        timestamps=times, source=str(path))


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


READERS: dict[str, Callable[..., Interactions]] = {
    "sasrec": read_sasrec,
    "s3rec": read_s3rec,
    "recbole": read_recbole_inter,
    "movielens-dat": read_movielens_dat,
    "movielens-csv": read_movielens_csv,
    "csv": read_csv,
    "parquet": read_parquet,
    "jsonl": read_jsonl,
}

TAKES_COLUMNS = {"recbole", "csv", "parquet", "jsonl"}
EXTENSIONS = {".inter": "recbole", ".dat": "movielens-dat", ".parquet": "parquet", ".pq": "parquet",
              ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv"}


def _by_extension(path: Path) -> str | None:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    fmt = EXTENSIONS.get(Path(name).suffix)
    if fmt == "csv" and first_line(path).startswith("userId,movieId"):
        return "movielens-csv"
    return fmt


def detect_format(path: Path) -> str:
    """The reader for a file: by its extension, else from the field counts of all its lines.

    A whitespace file that mixes 2-field and longer lines raises instead of guessing.
    """
    path = Path(path)
    fmt = _by_extension(path)
    if fmt is not None:
        return fmt
    numbers, widths = [], []
    for number, line in _lines(path, []):
        width = len(line.split())
        if width >= 2:
            numbers.append(number)
            widths.append(width)
    if not widths:
        raise DataFormatError(path, None, "empty file, or no line with 2 fields: cannot detect its format")
    return decide_shape(path, numbers, widths)


def read_interactions(path: str | Path, fmt: str = "auto",
                      columns: dict[str, str] | None = None) -> Interactions:
    """Read any supported file; 'auto' picks the reader by extension or by the lines' field counts."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    if fmt == "auto":
        fmt = _by_extension(path) or "auto"
        if fmt != "auto":
            log.info("%s: read as format '%s' (from its name)", path, fmt)
    if fmt == "auto":
        if columns:
            raise DataFormatError(path, None, "a column mapping needs a csv/tsv/jsonl/parquet/inter file or "
                                              "an explicit format")
        return read_fields(path, "auto")
    if fmt not in READERS:
        raise DataFormatError(path, None, f"unknown format '{fmt}'; known: {', '.join(READERS)}")
    if fmt in TAKES_COLUMNS:
        return READERS[fmt](path, columns or None)
    if columns:
        raise DataFormatError(path, None, f"format '{fmt}' has fixed columns; drop the column mapping")
    return READERS[fmt](path)
