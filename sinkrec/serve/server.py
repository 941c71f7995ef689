"""Run the service with uvicorn, or rebuild every stored state for the run's checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger("sinkrec.serve")


def serve(run: str | Path, store: str = "sqlite", host: str = "127.0.0.1", port: int = 8000,
          threads: int = 1, log_level: str = "warning") -> None:
    """One server process. Scale out with N of these behind a load balancer over one Redis."""
    import uvicorn

    from .app import create_app
    from .engine import Engine

    torch.set_num_threads(threads)  # per-event steps are tiny: threads fight more than they help
    engine = Engine.from_run(run, store)
    log.info("serving %s (checkpoint %s, %s store) on http://%s:%d", run, engine.checkpoint, engine.store.kind,
             host, port)
    uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level, access_log=False)


def rebuild(run: str | Path, store: str = "sqlite") -> int:
    """Recompute every user's state from its event log with this run's checkpoint."""
    from .engine import Engine

    engine = Engine.from_run(run, store)
    done = engine.rebuild()
    log.info("rebuilt %d user states with checkpoint %s", done, engine.checkpoint)
    return done
