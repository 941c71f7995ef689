"""The trial loop that makes a study resumable: `--trials` is a total, killed trials fail, no settings twice.

A study may be stopped at any moment (a SIGKILL, a lost machine) and started again with the same
command. Five rules make that safe:
- the total counts finished trials (complete or pruned) and trials some live worker is running;
  a worker takes its next trial under a file lock, so workers on one machine never overshoot;
- a trial whose worker died is marked failed: each running trial records its host and holds the lock
  of its run folder, and a lock nobody on that host holds means its process is gone (trials of other
  machines: Optuna's heartbeat);
- a trial whose settings equal an earlier trial's (any state) fails as a duplicate and does not count,
  and the sampler's seed mixes in the study's size, so a rerun does not redraw the same sequence;
- a failed trial that was killed (not one that raised) after its run folder committed an epoch is
  continued once: its settings are queued with `resume_of`, and the worker that takes them resumes
  that folder exactly (the trainer's resume) instead of training those settings from the start;
- a trial stopped by a device fault (the process's CUDA context is lost, e.g. an illegal memory
  access, whoever caused it: under MPS one client's fault reaches every client) counts as killed,
  not as failed by its settings, and its worker stops at once: every later trial of that process
  would fail at its first CUDA call. A continuation that meets a device fault again is not continued.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import CheckpointError, SinkrecError
from ..training import lock

try:
    import fcntl
except ImportError:  # Windows: one worker per study
    fcntl = None

log = logging.getLogger("sinkrec.tune")
MAX_DUPLICATES = 20  # consecutive duplicate draws before the space counts as exhausted
MAX_ERRORS = 5  # consecutive trials that raised (diverged, out of memory, ...) before the worker stops


# messages of errors that leave the process's CUDA context unusable (sticky errors), whatever raised them
DEVICE_FAULTS = ("illegal memory access", "unspecified launch failure", "CUBLAS_STATUS_INTERNAL_ERROR",
                 "mha_graph.execute", "misaligned address", "illegal instruction", "device-side assert",
                 "uncorrectable ECC error")


def device_fault(exc: BaseException) -> bool:
    """True when `exc` says the GPU context is lost (retrying in this process cannot succeed)."""
    return type(exc).__name__ == "AcceleratorError" or any(fault in str(exc) for fault in DEVICE_FAULTS)


def continuable(attrs: dict) -> bool:
    """Whether a failed trial with these user attributes ended by no fault of its settings: killed, or
    stopped by a device fault (once: a continuation that faults again is taken as the settings' doing)."""
    if {"error", "duplicate_of"} & set(attrs):
        return False
    return not ("device_error" in attrs and "resume_of" in attrs)


class DuplicateSettings(SinkrecError):
    """The sampler proposed settings an earlier trial already had."""


def trial_folder(out: Path, number: int) -> Path:
    return out / "trials" / f"trial-{number:04d}"


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """Serialises 'count the trials, then take one' across the worker processes of one machine."""
    with open(out / "study.lock", "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fail_dead_trials(study, out: Path) -> list[int]:
    """Mark failed the running trials whose run folder no live process holds; their numbers."""
    import optuna

    dead = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get("host") != socket.gethostname():
            continue  # another machine's trial (or one not yet claimed): Optuna's heartbeat decides
        if not lock.held_by_live_process(trial.user_attrs.get("run", trial_folder(out, trial.number))):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            dead.append(trial.number)
    with warnings.catch_warnings():  # trials of workers on other machines: Optuna's heartbeat
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    if dead:
        log.warning("marked failed: trial(s) %s, whose worker was killed", ", ".join(map(str, dead)))
    return dead


def continue_killed_trials(study, out: Path) -> list[int]:
    """Queue a continuation of each killed trial whose run folder holds a committed epoch; their numbers.

    Called under the study lock, so two workers never queue the same one. A trial that raised
    (user attribute `error`, e.g. diverged) or was a duplicate is not continued: it would end the same way
    (`continuable`).
    """
    import optuna

    from ..training import runfolder

    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("resume_of") for t in trials}
    queued = []
    for trial in trials:
        if (trial.state != optuna.trial.TrialState.FAIL or trial.number in continued or not trial.params
                or not continuable(trial.user_attrs)):
            continue
        folder = Path(trial.user_attrs.get("run", trial_folder(out, trial.number)))
        try:
            if not folder.is_dir() or runfolder.read_manifest(folder) is None:
                continue
        except CheckpointError:
            continue
        study.enqueue_trial(trial.params, user_attrs={"resume_of": trial.number, "resume_from": str(folder)},
                            skip_if_exists=False)
        queued.append(trial.number)
    if queued:
        log.info("continuing killed trial(s) %s from their last committed epoch", ", ".join(map(str, queued)))
    return queued


def counted(study) -> int:
    """Trials that count towards the total: finished (complete or pruned) and running."""
    import optuna

    states = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))


def check_new_settings(trial, values: dict) -> None:
    """Raise DuplicateSettings when another trial of the study already had exactly these values."""
    for other in trial.study.get_trials(deepcopy=False):
        if other.number != trial.number and other.params == values:
            trial.set_user_attr("duplicate_of", other.number)
            raise DuplicateSettings(f"settings of trial {other.number} drawn again")


def run_trials(study, objective: Callable, total: int, out: Path, timeout: float | None = None) -> int:
    """Run trials until the study holds `total` counted ones (or `timeout` s pass); trials run here."""
    import optuna

    started, ran, duplicates, errors = time.monotonic(), 0, 0, 0
    while timeout is None or time.monotonic() - started < timeout:
        taken: list[int] = []
        with contextlib.ExitStack() as held:
            held.enter_context(study_lock(out))

            def locked_objective(trial, taken=taken, held=held):
                try:  # the trial is running (so counted) and its folder held before other workers look
                    lock.acquire(trial_folder(out, trial.number))
                    trial.set_user_attr("host", socket.gethostname())
                    trial.set_user_attr("run", str(trial_folder(out, trial.number)))
                    taken.append(trial.number)
                finally:
                    held.close()
                try:
                    return objective(trial)
                except optuna.TrialPruned:
                    raise
                except Exception as exc:  # kept with the trial: why it failed, for trials.md and later sessions
                    why = "device_error" if device_fault(exc) else "error"
                    trial.set_user_attr(why, f"{type(exc).__name__}: {exc}"[:300])
                    raise

            fail_dead_trials(study, out)
            if counted(study) >= total:
                break
            continue_killed_trials(study, out)
            try:
                study.optimize(locked_objective, n_trials=1, catch=(RuntimeError, SinkrecError))
            finally:  # only once Optuna has recorded the trial's end: until then it must look alive
                for number in taken:
                    lock.release(trial_folder(out, number))
        ran += 1
        last = next((t for t in study.get_trials(deepcopy=False) if taken and t.number == taken[0]), None)
        attrs = last.user_attrs if last is not None else {}
        duplicates = duplicates + 1 if "duplicate_of" in attrs else 0
        errors = errors + 1 if "error" in attrs and "duplicate_of" not in attrs else 0
        if "device_error" in attrs:
            log.warning("the device failed during trial %d (%s); this worker stops: its CUDA context is lost",
                        taken[0], attrs["device_error"].splitlines()[0])
            break
        if duplicates >= MAX_DUPLICATES:
            log.warning("%d draws in a row repeated earlier settings: the space looks exhausted; stopping",
                        duplicates)
            break
        if errors >= MAX_ERRORS:
            log.warning("%d trials in a row failed (the last: %s); stopping", errors, attrs["error"])
            break
    return ran
