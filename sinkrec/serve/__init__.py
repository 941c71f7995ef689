"""`sinkrec serve`: streaming recommendations over durable per-user state (docs/serving.md).

The engine (engine.py) is usable from Python; the HTTP app (app.py) is a thin layer over it.
Stores (stores.py, redis_store.py) keep each user's event log and state behind one interface.
"""

from .engine import Engine, RecordResult, UnknownUserError
from .open_store import open_store
from .stores import Event, EventConflict, SQLiteStore, Store, StoreUnavailable

__all__ = ["Engine", "Event", "EventConflict", "RecordResult", "SQLiteStore", "Store", "StoreUnavailable",
           "UnknownUserError", "open_store"]
