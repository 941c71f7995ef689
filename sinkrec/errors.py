"""Errors a user can cause; each names what is wrong and where."""

from __future__ import annotations


class SinkrecError(Exception):
    """Base class for errors caused by user input (files, configs, ids)."""


class ConfigError(SinkrecError):
    """A config key or value is wrong; the message is one line (keys may come from user files)."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


def one_line(message: str) -> str:
    """Messages are printed as one line: embedded line breaks (from file content) become spaces."""
    return " ".join(message.splitlines()) or "(no detail)"


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
