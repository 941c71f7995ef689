"""A store from its URL: the one place that knows every store kind (so no store imports another)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SinkrecError
from .stores import SQLiteStore, Store


def open_store(spec: str | Store, default_path: str | Path | None = None) -> Store:
    """'sqlite' (the run's serving folder), 'sqlite:///path/to/file.db' or 'redis://host:port/db'."""
    if isinstance(spec, Store):
        return spec
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore

        return RedisStore(spec)
    if spec == "sqlite":
        if default_path is None:
            raise SinkrecError("the sqlite store needs a path: give sqlite:///path/to/state.db")
        return SQLiteStore(default_path)
    if spec.startswith("sqlite:///"):
        return SQLiteStore(spec[len("sqlite:///"):])  # as SQLAlchemy: sqlite:///relative, sqlite:////absolute
    raise SinkrecError(f"unknown store '{spec}': use sqlite, sqlite:///PATH or redis://HOST:PORT/DB")
