"""Which reader a file needs: by its name, else from the field counts of its lines."""

from __future__ import annotations

from pathlib import Path

from ...errors import DataFormatError
from .lines import _lines, first_line
from .text import Shapes

EXTENSIONS = {".inter": "recbole", ".dat": "movielens-dat", ".parquet": "parquet", ".pq": "parquet",
              ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv"}


def _by_extension(path: Path) -> str | None:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    fmt = EXTENSIONS.get(Path(name).suffix)
    if fmt == "csv" and first_line(path).startswith("userId,movieId,rating,timestamp"):  # MovieLens exactly
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
    shapes = Shapes()
    for number, line in _lines(path, []):
        width = len(line.split())
        if width >= 2:
            shapes.add(number, width)
    if not shapes.lines:
        raise DataFormatError(path, None, "empty file, or no line with 2 fields: cannot detect its format")
    return shapes.decide(path)
