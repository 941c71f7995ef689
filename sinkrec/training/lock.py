"""One writer per output folder: `run.lock` holds an exclusive flock plus the owner's pid and host.

The kernel drops a flock when its process dies, so a lock left by a killed run is never stale.
Where flock is unavailable (some network file systems), the pid is checked for liveness instead.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import RunFolderBusyError
from ..procs import alive

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "run.lock"
_held: dict[str, list] = {}  # folder → [open file, depth]: re-entrant within one process


def _owner(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _owner_alive(owner: dict) -> bool:
    """Where flock is missing: the lock file names a live process of this host."""
    return bool(owner.get("pid")) and owner.get("host") == socket.gethostname() and alive(int(owner["pid"]))


def acquire(folder: str | Path) -> None:
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:
        _held[key][1] += 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held until release()
    locked = False
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            handle.close()
            _busy(folder, _owner(path))
        except OSError:  # no flock here: fall back to the pid written in the file
            pass
    if not locked:
        owner = _owner(path)
        if _owner_alive(owner) and int(owner["pid"]) != os.getpid():
            handle.close()
            _busy(folder, owner)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    _held[key] = [handle, 1]


def _busy(folder: Path, owner: dict) -> None:
    who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')}"
    raise RunFolderBusyError(f"{folder} is in use by another sinkrec run ({who}); wait for it to finish, "
                             f"or train into another folder (--output)")


def release(folder: str | Path) -> None:
    key = str(Path(folder).resolve())
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] > 0:
        return
    handle = _held.pop(key)[0]
    handle.seek(0)
    handle.truncate()  # the file stays: unlinking it would let two later runs lock two different files
    handle.close()


def held_by_live_process(folder: str | Path) -> bool:
    """Whether some live process holds `folder`'s lock (a killed owner's flock is gone with it)."""
    path = Path(folder) / LOCK_NAME
    if str(Path(folder).resolve()) in _held:
        return True
    if fcntl is None or not path.is_file():
        return _owner_alive(_owner(path))
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no flock on this file system: the owner's pid decides
            return _owner_alive(_owner(path))
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def ensure_free(folder: str | Path) -> None:
    """Refuse now, before costly work, a folder that a live process holds (acquire would refuse it later)."""
    path = Path(folder)
    if path.is_dir() and str(path.resolve()) not in _held and held_by_live_process(path):
        _busy(path, _owner(path / LOCK_NAME))
