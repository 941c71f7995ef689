"""Readers for interaction logs. Each returns `Interactions` in file order with original ids.

Every reader checks what it reads and raises `DataFormatError` naming the file, the line and
what was expected. Blank lines are skipped and counted in `notes`; nothing else is dropped.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import DataFormatError


@dataclass
class Interactions:
    """Raw events in file order: original user/item ids and optional timestamps."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.users)


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def _lines(path: Path, notes: list[str]) -> Iterator[tuple[int, str]]:
    """Non-blank lines with 1-based numbers; blank lines are counted into `notes`."""
    blank = 0
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield number, line
                else:
                    blank += 1
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise DataFormatError(path, None, f"cannot read file: {exc}") from None
    if blank:
        notes.append(f"skipped {blank} blank line(s)")


def _as_ids(tokens: list[str], line_numbers: list[int], path: Path, what: str,
            integer: bool) -> np.ndarray:
    """Token list → int64 array (if `integer` or all tokens are integers) else str array."""
    array = np.asarray(tokens)
    if array.size == 0:
        return array.astype(np.int64)
    try:
        return array.astype(np.int64)
    except (ValueError, OverflowError):
        if not integer:
            return array.astype(str)
    for token, number in zip(tokens, line_numbers):
        try:
            int(token)
        except ValueError:
            raise DataFormatError(path, number, f"{what} id '{token}' is not an integer") from None
    raise AssertionError("unreachable")


def _parse_time(token: str, path: Path, number: int) -> float:
    try:
        value = float(token)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(token.strip())
        except ValueError:
            raise DataFormatError(
                path, number, f"timestamp '{token}' is neither a number nor an ISO date") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        value = parsed.timestamp()
    if not np.isfinite(value) or value < 0:
        raise DataFormatError(path, number, f"timestamp {token} must be a finite number ≥ 0")
    return value


def _finish(path: Path, users: list[str], items: list[str], times: list[float] | None,
            numbers: list[int], notes: list[str], integer_ids: bool) -> Interactions:
    if not users:
        raise DataFormatError(path, None, "no interactions found (empty file?)")
    return Interactions(
        users=_as_ids(users, numbers, path, "user", integer_ids),
        items=_as_ids(items, numbers, path, "item", integer_ids),
        timestamps=None if times is None else np.asarray(times, dtype=np.float64),
        source=str(path),
        notes=notes,
    )


def read_sasrec(path: Path) -> Interactions:
    """`user item` per line, lines grouped by user in chronological order (SASRec files)."""
    notes: list[str] = []
    users, items, numbers = [], [], []
    for number, line in _lines(path, notes):
        parts = line.split()
        if len(parts) != 2:
            raise DataFormatError(path, number, f"expected 'user item' (2 fields), got {len(parts)}")
        users.append(parts[0])
        items.append(parts[1])
        numbers.append(number)
    return _finish(path, users, items, None, numbers, notes, integer_ids=True)


def read_s3rec(path: Path) -> Interactions:
    """`user item item …` one user per line, chronological (S3-Rec files)."""
    notes: list[str] = []
    users, items, numbers = [], [], []
    for number, line in _lines(path, notes):
        parts = line.split()
        if len(parts) < 2:
            raise DataFormatError(path, number, "expected 'user item [item …]' (at least 2 fields)")
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
        numbers.extend([number] * (len(parts) - 1))
    return _finish(path, users, items, None, numbers, notes, integer_ids=True)


def read_movielens_dat(path: Path) -> Interactions:
    """MovieLens `UserID::MovieID::Rating::Timestamp` (ratings.dat, optionally gzipped)."""
    notes: list[str] = []
    users, items, times, numbers = [], [], [], []
    for number, line in _lines(path, notes):
        parts = line.strip().split("::")
        if len(parts) != 4:
            raise DataFormatError(path, number,
                                  f"expected 'UserID::MovieID::Rating::Timestamp', got {line.strip()!r}")
        users.append(parts[0])
        items.append(parts[1])
        times.append(_parse_time(parts[3], path, number))
        numbers.append(number)
    return _finish(path, users, items, times, numbers, notes, integer_ids=True)


def _read_delimited(path: Path, columns: dict[str, str], delimiter: str, header: bool | None,
                    type_suffix: bool = False) -> Interactions:
    """Delimited text with a header (names) or without (0-based column indices)."""
    notes: list[str] = []
    want = {key: columns[key] for key in ("user", "item", "timestamp") if columns.get(key) is not None}
    for key in ("user", "item"):
        if key not in want:
            raise DataFormatError(path, None, f"column mapping lacks '{key}' (got {sorted(columns)})")
    positional = all(str(v).isdigit() for v in want.values()) if header is None else not header
    index: dict[str, int] = {}
    users, items, times, numbers = [], [], [], []
    lines = _lines(path, notes)
    if positional:
        index = {key: int(value) for key, value in want.items()}
    else:
        try:
            number, first = next(lines)
        except StopIteration:
            raise DataFormatError(path, None, "empty file (expected a header line)") from None
        names = next(csv.reader([first.rstrip("\r\n")], delimiter=delimiter))
        if type_suffix:
            names = [name.split(":")[0] for name in names]
        for key, name in want.items():
            if name not in names:
                raise DataFormatError(path, number,
                                      f"unknown column '{name}' for {key}; header has {names}")
            index[key] = names.index(name)
    width = max(index.values()) + 1
    reader = csv.reader((line for _, line in _with_numbers(lines, numbers)), delimiter=delimiter)
    for row in reader:
        number = numbers[-1]
        if len(row) < width:
            raise DataFormatError(path, number, f"expected at least {width} fields, got {len(row)}")
        users.append(row[index["user"]].strip())
        items.append(row[index["item"]].strip())
        if "timestamp" in index:
            times.append(_parse_time(row[index["timestamp"]], path, number))
    line_numbers = numbers[: len(users)]
    return _finish(path, users, items, times if "timestamp" in index else None, line_numbers, notes,
                   integer_ids=False)


def _with_numbers(lines: Iterator[tuple[int, str]], numbers: list[int]) -> Iterator[tuple[int, str]]:
    """Pass lines through while recording each one's number (for csv.reader error locations)."""
    for number, line in lines:
        numbers.append(number)
        yield number, line


def read_recbole_inter(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """RecBole atomic `.inter`: TSV with a typed header (`user_id:token item_id:token …`)."""
    cols = {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    cols.update(columns or {})
    with open_text(path) as handle:
        first = handle.readline()
    if not first.strip():
        raise DataFormatError(path, 1, "empty file (expected a typed header such as 'user_id:token')")
    names = [name.split(":")[0] for name in first.rstrip("\r\n").split("\t")]
    if cols.get("timestamp") not in names:
        cols.pop("timestamp")
    return _read_delimited(path, cols, "\t", header=True, type_suffix=True)


def read_movielens_csv(path: Path) -> Interactions:
    """MovieLens `ratings.csv` (userId,movieId,rating,timestamp with a header)."""
    return _read_delimited(path, {"user": "userId", "item": "movieId", "timestamp": "timestamp"}, ",",
                           header=True)


def read_csv(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """Generic CSV/TSV (tab if the first line has one): `columns` maps user/item/[timestamp] to
    header names, or to 0-based indices for a file without a header."""
    cols = columns or {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    with open_text(path) as handle:
        first = handle.readline()
    delimiter = "\t" if "\t" in first else ","
    if not columns:
        header = next(csv.reader([first], delimiter=delimiter), [])
        if "timestamp" not in [name.strip() for name in header]:
            cols = {"user": cols["user"], "item": cols["item"]}
    return _read_delimited(path, cols, delimiter, header=None)


def read_parquet(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """Parquet with a column mapping (needs pandas + pyarrow: `pip install sinkrec[parquet]`)."""
    try:
        import pandas as pd
    except ImportError:
        raise DataFormatError(path, None, "reading Parquet needs pandas and pyarrow "
                              "(pip install 'sinkrec[parquet]')") from None
    cols = columns or {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    frame = pd.read_parquet(path)
    for key in ("user", "item"):
        if cols.get(key) not in frame.columns:
            raise DataFormatError(path, None,
                                  f"unknown column '{cols.get(key)}' for {key}; has {list(frame.columns)}")
    times = None
    if cols.get("timestamp") in frame.columns:
        times = frame[cols["timestamp"]].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(times) | (times < 0))
        if bad.size:
            raise DataFormatError(path, int(bad[0]) + 1, f"row {bad[0]}: timestamp must be a number ≥ 0")
    if len(frame) == 0:
        raise DataFormatError(path, None, "no interactions found (empty file?)")
    users = frame[cols["user"]].to_numpy()
    items = frame[cols["item"]].to_numpy()
    return Interactions(
        users=users if users.dtype.kind in "iu" else users.astype(str),
        items=items if items.dtype.kind in "iu" else items.astype(str),
        timestamps=times, source=str(path))


def read_jsonl(path: Path, columns: dict[str, str] | None = None) -> Interactions:
    """One JSON (or Python-literal, as in the Steam dump) object per line, with a field mapping."""
    cols = columns or {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    notes: list[str] = []
    users, items, times, numbers = [], [], [], []
    for number, line in _lines(path, notes):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            try:
                record = ast.literal_eval(line.strip())
            except (ValueError, SyntaxError):
                raise DataFormatError(path, number, "expected one JSON object per line") from None
        if not isinstance(record, dict):
            raise DataFormatError(path, number, "expected one JSON object per line")
        for key in ("user", "item"):
            if cols[key] not in record:
                raise DataFormatError(path, number, f"field '{cols[key]}' ({key}) missing")
        users.append(str(record[cols["user"]]))
        items.append(str(record[cols["item"]]))
        if cols.get("timestamp"):
            if cols["timestamp"] not in record:
                raise DataFormatError(path, number, f"field '{cols['timestamp']}' (timestamp) missing")
            times.append(_parse_time(str(record[cols["timestamp"]]), path, number))
        numbers.append(number)
    return _finish(path, users, items, times if cols.get("timestamp") else None, numbers, notes,
                   integer_ids=False)


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


def detect_format(path: Path) -> str:
    """Guess the reader from the file name and, for `.txt`, from its first lines."""
    name = path.name.lower()
    if name.endswith((".inter", ".inter.gz")):
        return "recbole"
    if name.endswith((".dat", ".dat.gz")):
        return "movielens-dat"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".json.gz", ".jsonl.gz")):
        return "jsonl"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        with open_text(path) as handle:
            head = handle.readline()
        return "movielens-csv" if head.startswith("userId,movieId") else "csv"
    with open_text(path) as handle:
        widths = [len(line.split()) for line, _ in zip(handle, range(2000)) if line.strip()]
    if not widths:
        raise DataFormatError(path, None, "empty file: cannot detect its format")
    return "s3rec" if max(widths) > 2 else "sasrec"


def read_interactions(path: str | Path, fmt: str = "auto",
                      columns: dict[str, str] | None = None) -> Interactions:
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise DataFormatError(path, None, f"unknown format '{fmt}'; known: {', '.join(READERS)}")
    if fmt in TAKES_COLUMNS:
        return READERS[fmt](path, columns or None)
    if columns:
        raise DataFormatError(path, None, f"format '{fmt}' has fixed columns; drop the column mapping")
    return READERS[fmt](path)
