"""Run the service with uvicorn (one worker process per core by default), or rebuild every stored state.

Worker processes are uvicorn's: they share the listening socket and build their own app from the
settings passed in the environment (`SINKREC_SERVE_SETTINGS`, JSON without any token: workers
read tokens from the same file or variable as the parent). Each worker exits soon after its parent.
They share a temporary metrics directory (removed when the server stops), so that /metrics
reports the whole server whichever worker answers.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import SinkrecError
from .auth import Tokens
from .limits import Limits

log = logging.getLogger("sinkrec.serve")
SETTINGS_ENV = "SINKREC_SERVE_SETTINGS"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tokens: Tokens | None, insecure: bool) -> None:
    """Refuse to listen beyond this machine without auth, unless asked to in so many words."""
    if tokens is None and not is_loopback(host) and not insecure:
        raise SinkrecError(f"refusing to serve on {host} without auth: give --token-file (or set "
                           "SINKREC_SERVE_TOKENS), or pass --insecure to expose the service to anyone who can "
                           "reach it")


def build_app(settings: dict, tokens: Tokens | None = None):
    """The app of one worker process, from the JSON-able settings `serve` passes on (tokens: read here)."""
    from .app import create_app
    from .engine import Engine

    torch.set_num_threads(settings["threads"])  # per-event steps are tiny: threads fight more than they help
    engine = Engine.from_run(settings["run"], settings["store"], batch_steps=settings.get("batch_steps", False))
    tokens = tokens if tokens is not None else Tokens.load(settings.get("token_file"))
    log.info("serving %s (checkpoint %s, %s store, auth %s)", settings["run"], engine.checkpoint,
             engine.store.kind, "on" if tokens else "off")
    return create_app(engine, tokens=tokens, limits=Limits(**settings["limits"]),
                      open_metrics=settings["open_metrics"], metrics_dir=settings.get("metrics_dir"))


def worker_app():
    """uvicorn's factory in each worker process: settings from the environment; exits with the parent."""
    from ..procs import watch_parent

    settings = json.loads(os.environ[SETTINGS_ENV])
    watch_parent(settings["parent"], every=0.5)  # a SIGKILLed parent leaves no worker serving
    return build_app(settings)


def serve(run: str | Path, store: str = "sqlite", host: str = "127.0.0.1", port: int = 8000,
          threads: int = 1, log_level: str = "warning", *, workers: int | None = None,
          token_file: str | Path | None = None, insecure: bool = False, open_metrics: bool = False,
          limits: Limits | None = None, batch_steps: bool = False) -> None:
    """Serve `run`. Several workers share one store: SQLite (one file, writers serialised by its lock)
    or Redis; each worker keeps its own process, model and committer."""
    import uvicorn

    workers = workers or os.cpu_count() or 1
    tokens = Tokens.load(token_file)
    check_exposure(host, tokens, insecure)
    settings = {"run": str(run), "store": store, "threads": threads, "open_metrics": open_metrics,
                "batch_steps": batch_steps,
                "token_file": str(token_file) if token_file else None, "limits": (limits or Limits()).to_dict()}
    if store.startswith("sqlite:///:memory:") and workers > 1:
        raise SinkrecError("an in-memory SQLite store cannot be shared by workers: use --workers 1")
    if workers == 1:
        app = build_app(settings, tokens)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    metrics_dir = tempfile.mkdtemp(prefix="sinkrec-metrics-")  # the workers' snapshots (metrics.py)
    os.environ[SETTINGS_ENV] = json.dumps({**settings, "parent": os.getpid(), "metrics_dir": metrics_dir})
    log.info("serving %s on http://%s:%d with %d worker processes", run, host, port, workers)
    try:
        uvicorn.run("sinkrec.serve.server:worker_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, access_log=False)
    finally:
        os.environ.pop(SETTINGS_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def rebuild(run: str | Path, store: str = "sqlite") -> int:
    """Recompute every user's state from its event log with this run's checkpoint."""
    from .engine import Engine

    engine = Engine.from_run(run, store)
    done = engine.rebuild()
    log.info("rebuilt %d user states with checkpoint %s", done, engine.checkpoint)
    return done
