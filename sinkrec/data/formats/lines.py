"""Strict line reading: UTF-8 (a BOM is allowed), gzip, and errors that name line, column and byte."""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ...errors import DataFormatError, env_bytes
from .records import note

log = logging.getLogger(__name__)
BOM = b"\xef\xbb\xbf"


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


# bytes decoded at once: a block of short lines becomes ~8× its size in line objects, so blocks
# stay small enough for that to be noise next to the events read (and large enough to be fast)
CHUNK = 1 << 18


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


MAX_LINE_BYTES = 64 << 20  # SINKREC_MAX_LINE_BYTES overrides: a file without line breaks is not held whole


class _LongLine(Exception):
    pass


def _max_line_bytes() -> int:
    return env_bytes("SINKREC_MAX_LINE_BYTES", MAX_LINE_BYTES, DataFormatError)


def _blocks(handle: IO[bytes]) -> Iterator[bytes]:
    """The stream cut into blocks that end at a line break (the last one may not).

    Raises `_LongLine` when a line grows past SINKREC_MAX_LINE_BYTES before its line break.
    """
    limit = _max_line_bytes()
    pending: list[bytes] = []
    size = 0
    while True:
        block = handle.read(CHUNK)
        if not block:
            break
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            pending.append(block)
            size += len(block)
            if size > limit:
                raise _LongLine(limit)
            continue
        yield b"".join([*pending, block[:cut]])
        pending, size = [block[cut:]], len(block) - cut
    if size:
        yield b"".join(pending)


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
                del lines  # before the next block: two blocks of line objects would double this peak
    except _LongLine as exc:
        raise DataFormatError(path, number + 1, f"longer than {exc.args[0]} bytes without a line break: not a "
                                                "text file of interactions? (SINKREC_MAX_LINE_BYTES allows more)"
                              ) from None
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
