"""Readers for interaction logs. Each returns `Interactions` in file order with the user's ids.

Ids are strings end to end: a reader keeps each id exactly as the token in the file (`007` and
`7` are different items, an id longer than any integer type is fine), so recommendations come
back in the user's own tokens. Surrounding whitespace is never part of an id.

Every reader checks what it reads and raises `DataFormatError` naming the file, the line and
what was expected. Blank lines are skipped, counted in `notes` and logged; nothing else is
dropped. Files are decoded strictly as UTF-8 (a BOM is allowed), and a bad byte or a NUL is
reported with its line, column and byte offset.

Layout: `records` (Interactions, field parsers), `lines` (strict UTF-8 lines), `text`
(whitespace, MovieLens `::`, JSON lines), `tabular` (CSV/TSV/RecBole, Parquet), `detect`
(format by name or field counts); this module holds the table of readers and `read_interactions`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ...errors import DataFormatError
from .detect import EXTENSIONS, _by_extension, detect_format
from .lines import BOM, CHUNK, first_line, text_lines
from .records import Interactions, as_tokens, note, parse_rating, parse_time
from .tabular import DEFAULT_COLUMNS, HEADER_NAMES, read_csv, read_movielens_csv, read_parquet, read_recbole_inter
from .text import SHAPES, decide_shape, read_fields, read_jsonl, read_movielens_dat, read_s3rec, read_sasrec

log = logging.getLogger(__name__)

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


__all__ = ["BOM", "CHUNK", "DEFAULT_COLUMNS", "EXTENSIONS", "HEADER_NAMES", "READERS", "SHAPES", "TAKES_COLUMNS",
           "Interactions", "as_tokens", "decide_shape", "detect_format", "first_line", "note", "parse_rating",
           "parse_time", "read_csv", "read_fields", "read_interactions", "read_jsonl", "read_movielens_csv",
           "read_movielens_dat", "read_parquet", "read_recbole_inter", "read_s3rec", "read_sasrec", "text_lines"]
