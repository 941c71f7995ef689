"""Errors a user can cause; each names what is wrong and where."""

from __future__ import annotations

import os
import reprlib
from typing import Any


class SinkrecError(Exception):
    """Base class for errors caused by user input (files, configs, ids)."""


class ConfigError(SinkrecError):
    """A config key or value is wrong; the message is one line (keys may come from user files)."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


MESSAGE_LIMIT = 1000  # characters: a message that quotes file content stays readable


def one_line(message: str) -> str:
    """Messages are printed as one line: embedded line breaks (from file content) become spaces,
    and a message that quotes too much is cut at MESSAGE_LIMIT characters."""
    return cut(message, MESSAGE_LIMIT) or "(no detail)"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2


def shorten(value: Any, limit: int = 80) -> str:
    """A value for an error message: a repr of at most `limit` characters, on one line.

    The work is bounded too: a long string is cut before it is quoted, a long list shows its
    first items, a huge integer its size; a value from a crafted file cannot blow up the message.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        text = f"<an integer of about {value.bit_length() * 3 // 10} digits>"
    else:
        try:
            text = _REPR.repr(value)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
            text = f"<{type(value).__name__}>"
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cut(text: str, limit: int = 200) -> str:
    """A message part (e.g. another library's error text) cut to `limit` characters, on one line."""
    text = " ".join(text[: limit + 1].splitlines())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DataError(SinkrecError):
    """A data set that was read but cannot be used (e.g. nothing left to train on)."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


class DataFormatError(DataError):
    """A data file does not match the expected format."""

    def __init__(self, path: object, line: int | None, message: str):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class UnknownItemError(SinkrecError):
    """An item id that the model's catalogue does not contain."""


class CheckpointError(SinkrecError):
    """A checkpoint or run folder that cannot be loaded safely, or does not fit the data or config."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


class NonFiniteError(SinkrecError):
    """Training or scoring produced NaN or inf: nothing computed from it is trustworthy."""


class RunFolderBusyError(SinkrecError):
    """Another process holds the output folder's lock."""


def env_bytes(name: str, default: int, error: type[SinkrecError] | None = None) -> int:
    """A size limit from the environment variable `name` (a number of bytes), or `default` when unset."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):
        raise (error or SinkrecError)(f"{name} must be a number of bytes, got {shorten(text)}")
    return int(text)
