"""Run folders that survive a kill at any moment.

Layout (`OUTPUT/`):

    model-0007.pt   model file of the latest epoch (weights, config, item ids, data fingerprint)
    model-0005.pt   model file of the best epoch (the same file when the latest epoch is the best)
    state-0007.pt   training state after the latest epoch (optimizer, scheduler, RNG, history)
    metrics.json    the manifest: names the files above, the best epoch, the metrics and history
    best.pt         a hard link to the best model file, for sharing (a convenience copy)
    run.lock        held by the process that trains into the folder

Each epoch writes its model and state files (temporary name, fsync, rename), then replaces
`metrics.json` atomically: that rename is the commit. Readers trust only the files it names, so
a kill before it leaves the previous epoch intact and a kill after it leaves the new one; files
it no longer names are deleted afterwards. `best.pt` is refreshed after the commit; loading the
folder reads the manifest, never `best.pt`.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from . import checkpoint, lock

MANIFEST, BEST_LINK = "metrics.json", "best.pt"
_fault_count = 0


@contextmanager
def claimed(folder: str | Path, main: bool = True) -> Iterator[None]:
    """Hold `folder`'s lock while a run writes to it (on the main process only).

    A folder this call created that holds nothing but the lock when the run ends (it failed
    before its first epoch was committed) is removed, so a failed command leaves no empty run.
    """
    folder = Path(folder)
    existed = folder.exists()
    if main:
        lock.acquire(folder)
    try:
        yield
    finally:
        if main:
            if not existed and folder.is_dir() and {p.name for p in folder.iterdir()} <= {lock.LOCK_NAME}:
                with suppress(OSError):  # another process wrote here meanwhile: keep the folder, and our error
                    (folder / lock.LOCK_NAME).unlink(missing_ok=True)  # still held: no other run can be in it
                    folder.rmdir()
            lock.release(folder)


def fault_point() -> None:
    """Test hook: SINKREC_FAULT_AT=N SIGKILLs this process at its N-th save step (kill tests)."""
    global _fault_count
    target = os.environ.get("SINKREC_FAULT_AT")
    if target:
        _fault_count += 1
        if _fault_count == int(target):
            os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename: `path` is always absent, the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        half = len(data) // 2
        handle.write(data[:half])
        handle.flush()
        fault_point()  # a kill here leaves a half-written temporary file
        handle.write(data[half:])
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)
    fault_point()


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def model_name(epoch: int) -> str:
    return f"model-{epoch:04d}.pt"


def state_name(epoch: int) -> str:
    return f"state-{epoch:04d}.pt"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest, or None when no epoch was committed (an empty or pre-0.2 folder)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: not a run manifest")
    if not isinstance(manifest.get("checkpoint"), dict):
        if (folder / "last.pt").exists() or (folder / "best.pt").exists():
            raise CheckpointError(f"{folder}: a run folder of sinkrec < 0.2, whose checkpoints "
                                  f"{checkpoint.OLD_FORMAT}")
        return None
    return manifest


def commit(folder: Path, epoch: int, best_epoch: int, metrics: dict[str, Any], model: dict | None = None,
           state: dict | None = None) -> None:
    """Write this epoch's files (if given), then the manifest naming them (the commit), then tidy up."""
    files = {"format": checkpoint.VERSION, "epoch": epoch, "model": model_name(epoch),
             "best_model": model_name(best_epoch), "state": state_name(epoch)}
    if model is not None:
        atomic_write(folder / files["model"], checkpoint.to_bytes(model))
    if state is not None:
        atomic_write(folder / files["state"], checkpoint.to_bytes(state))
    for name in ("model", "best_model", "state"):
        if not (folder / files[name]).is_file():
            raise CheckpointError(f"{folder}: {files[name]} is missing; cannot commit epoch {epoch}")
    atomic_write(folder / MANIFEST, json.dumps({**metrics, "checkpoint": files}, indent=2).encode())
    refresh_best_link(folder, files["best_model"])
    tidy(folder, {files["model"], files["best_model"], files["state"]})


def refresh_best_link(folder: Path, best_model: str) -> None:
    """best.pt: a hard link to the best model file (a copy where links are not supported)."""
    link, target = folder / BEST_LINK, folder / best_model
    try:
        if link.exists() and os.path.samefile(link, target):
            return
    except OSError:
        pass
    tmp = folder / (BEST_LINK + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
        os.replace(tmp, link)
        fault_point()
    except OSError:
        atomic_write(link, target.read_bytes())


def tidy(folder: Path, keep: set[str]) -> None:
    """Delete model/state files the manifest does not name, and temporary files of killed saves."""
    for path in sorted(folder.iterdir()):
        stale = path.name.endswith(".tmp") or (
            path.name.startswith(("model-", "state-")) and path.suffix == ".pt" and path.name not in keep)
        if stale:
            path.unlink(missing_ok=True)
            fault_point()


def resolve(path: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """(folder, manifest) for a run folder or a file in one; (file, None) for a lone model file."""
    path = Path(path)
    if path.is_dir():
        return path, read_manifest(path)
    if path.name in (MANIFEST, "last.pt") or (not path.exists() and path.name == BEST_LINK):
        return path.parent, read_manifest(path.parent)  # the names of earlier versions mean their folder
    return path, None


def load_model(path: str | Path) -> dict[str, Any]:
    """The model payload for a run folder (its manifest's best model) or a model file."""
    target, manifest = resolve(path)
    if target.is_dir():
        if manifest is None:
            raise CheckpointError(f"{target}: no trained epoch to load (no {MANIFEST} naming a model file); "
                                  f"is it a run folder?")
        payload = checkpoint.read(target / manifest["checkpoint"]["best_model"])
        if payload["epoch"] != manifest.get("best_epoch"):
            raise CheckpointError(f"{target}: the best model file holds epoch {payload['epoch']} but the "
                                  f"manifest says {manifest.get('best_epoch')}")
        return payload
    return checkpoint.read(target)


def load_training(folder: Path, manifest: dict[str, Any]) -> tuple[dict, dict]:
    """(latest model payload, state payload) that the manifest names, checked to agree."""
    files = manifest["checkpoint"]
    model = checkpoint.read(folder / files["model"])
    state = checkpoint.read(folder / files["state"], checkpoint.STATE_FORMAT)
    if not model["epoch"] == state["epoch"] == files["epoch"]:
        raise CheckpointError(f"{folder}: files disagree (model epoch {model['epoch']}, state epoch "
                              f"{state['epoch']}, manifest epoch {files['epoch']})")
    return model, state


def verify(folder: str | Path) -> dict[str, Any] | None:
    """Check that a run folder loads and its files agree; the manifest, or None before any commit."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    model, state = load_training(folder, manifest)
    best = load_model(folder)
    epoch = manifest["checkpoint"]["epoch"]
    if not (manifest["epochs"] == epoch == len(manifest["history"]) == len(state["history"])):
        raise CheckpointError(f"{folder}: manifest history ({len(manifest['history'])} epochs) disagrees "
                              f"with epoch {epoch}")
    if state["best"]["epoch"] != best["epoch"] or manifest["best_epoch"] != best["epoch"]:
        raise CheckpointError(f"{folder}: best epoch disagrees (state {state['best']['epoch']}, manifest "
                              f"{manifest['best_epoch']}, model file {best['epoch']})")
    if model["fingerprint"] != best["fingerprint"]:
        raise CheckpointError(f"{folder}: model files of one run carry different data fingerprints")
    return manifest
