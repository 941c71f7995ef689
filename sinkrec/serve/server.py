"""Run the service with uvicorn (one worker process per core by default), or rebuild every stored state.

Each worker process listens on a socket of its own, bound to the port with SO_REUSEPORT, so the
kernel spreads connections evenly over the workers (`_run_workers`; where SO_REUSEPORT is missing,
uvicorn's workers sharing one socket). Workers build their own app from the JSON-able settings
(without any token: workers read tokens from the same file or variable as the parent). Each
worker exits soon after its parent.
They share a temporary metrics directory (removed when the server stops), so that /metrics
reports the whole server whichever worker answers.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
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
    from .engine import STATE_CACHE_BYTES, Engine

    torch.set_num_threads(settings["threads"])  # per-event steps are tiny: threads fight more than they help
    cache = settings.get("state_cache_bytes")
    engine = Engine.from_run(settings["run"], settings["store"],
                             state_cache_bytes=STATE_CACHE_BYTES if cache is None else cache)
    tokens = tokens if tokens is not None else Tokens.load(settings.get("token_file"))
    log.info("serving %s (checkpoint %s, %s store, auth %s)", settings["run"], engine.checkpoint,
             engine.store.kind, "on" if tokens else "off")
    return create_app(engine, tokens=tokens, limits=Limits(**settings["limits"]),
                      open_metrics=settings["open_metrics"], metrics_dir=settings.get("metrics_dir"))


def freeze_heap() -> None:
    """Move every object of the loaded app out of the cyclic GC's view (gc.freeze), once it is built.

    The model, torch and FastAPI leave ~330,000 tracked objects; each full collection walked them all
    while a request waited: one took 159 ms in a 6 s run at one client (p99 4 -> 7 ms). Frozen, a full
    collection walks only what was allocated since; nothing frozen is ever freed, and none of it should be.
    """
    gc.collect()
    gc.freeze()


def worker_app():
    """uvicorn's factory in each worker process: settings from the environment; exits with the parent."""
    from ..procs import watch_parent

    settings = json.loads(os.environ[SETTINGS_ENV])
    watch_parent(settings["parent"], every=0.5)  # a SIGKILLed parent leaves no worker serving
    app = build_app(settings)
    freeze_heap()
    return app


def serve(run: str | Path, store: str = "sqlite", host: str = "127.0.0.1", port: int = 8000,
          threads: int = 1, log_level: str = "warning", *, workers: int | None = None,
          token_file: str | Path | None = None, insecure: bool = False, open_metrics: bool = False,
          limits: Limits | None = None, state_cache_bytes: int | None = None) -> None:
    """Serve `run`. Several workers share one store: SQLite (one file, writers serialised by its lock)
    or Redis; each worker keeps its own process, model and committer."""
    import uvicorn

    workers = workers or os.cpu_count() or 1
    tokens = Tokens.load(token_file)
    check_exposure(host, tokens, insecure)
    settings = {"run": str(run), "store": store, "threads": threads, "open_metrics": open_metrics,
                "state_cache_bytes": state_cache_bytes,
                "token_file": str(token_file) if token_file else None, "limits": (limits or Limits()).to_dict()}
    if workers == 1:
        app = build_app(settings, tokens)
        freeze_heap()
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    metrics_dir = tempfile.mkdtemp(prefix="sinkrec-metrics-")  # the workers' snapshots (metrics.py)
    settings = {**settings, "parent": os.getpid(), "metrics_dir": metrics_dir}
    log.info("serving %s on http://%s:%d with %d worker processes", run, host, port, workers)
    try:
        if hasattr(socket, "SO_REUSEPORT"):
            _run_workers(settings, host, port, workers, log_level)
        else:  # uvicorn's workers share one socket
            os.environ[SETTINGS_ENV] = json.dumps(settings)
            uvicorn.run("sinkrec.serve.server:worker_app", factory=True, host=host, port=port, workers=workers,
                        log_level=log_level, access_log=False)
    finally:
        os.environ.pop(SETTINGS_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT: every worker's own, and the parent's (which holds the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise SinkrecError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


def _worker_main(settings: dict, host: str, port: int, log_level: str) -> None:
    """One worker process: its own listening socket in the port's SO_REUSEPORT group, its own app."""
    import uvicorn

    from ..procs import watch_parent

    sock = _socket(host, port)
    sock.listen(2048)
    watch_parent(settings["parent"], every=0.5)  # a SIGKILLed parent leaves no worker serving
    config = uvicorn.Config(build_app(settings), log_level=log_level, access_log=False)
    freeze_heap()
    uvicorn.Server(config).run(sockets=[sock])


def _run_workers(settings: dict, host: str, port: int, workers: int, log_level: str) -> None:
    """Start `workers` processes, restart any that dies, stop them all on SIGINT/SIGTERM.

    Each worker listens on a socket of its own, all bound to the port with SO_REUSEPORT: the kernel
    spreads new connections evenly over them. (With one shared socket, as uvicorn's workers have,
    whichever worker wakes first accepts a whole burst: 64 clients connecting at once all landed on
    one of two workers, the other idle.) The parent's socket is bound, never listening: it keeps the
    port while workers restart, and receives no connection.
    """
    import multiprocessing
    import signal

    holder = _socket(host, port)
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def start() -> multiprocessing.Process:
        proc = spawn.Process(target=_worker_main, args=(settings, host, port, log_level), daemon=False)
        proc.start()
        return proc

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs, restarts = [start() for _ in range(workers)], []
    try:
        while not stop.wait(0.5):
            for n, proc in enumerate(procs):
                if not proc.is_alive():
                    restarts = [t for t in restarts if t > time.monotonic() - 60] + [time.monotonic()]
                    if len(restarts) > 3 * workers:  # a worker that cannot start: stop, don't spin
                        raise SinkrecError(f"worker processes keep exiting ({len(restarts)} in a minute, the last "
                                           f"with code {proc.exitcode}): see the log above")
                    log.warning("worker %d exited (code %s): starting another", proc.pid, proc.exitcode)
                    procs[n] = start()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for proc in procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        holder.close()


def rebuild(run: str | Path, store: str = "sqlite") -> int:
    """Recompute every user's state from its event log with this run's checkpoint."""
    from .engine import Engine

    engine = Engine.from_run(run, store)
    done = engine.rebuild()
    log.info("rebuilt %d user states with checkpoint %s", done, engine.checkpoint)
    return done
