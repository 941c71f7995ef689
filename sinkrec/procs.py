"""Worker processes that do not outlive their parent.

`compare` and `tune` start workers as subprocesses. Killed with SIGKILL, a parent gets no chance
to stop them, and they would keep training (and holding a GPU) for hours. On Linux the kernel
can send a signal to a process when its parent dies (`prctl(PR_SET_PDEATHSIG)`); this module
sets that up between fork and exec, so it also covers the child's own start-up:

    subprocess.Popen(cmd, preexec_fn=die_with_parent())

Elsewhere `die_with_parent()` returns None (no pre-exec step) and a worker may call
`watch_parent()` itself: a daemon thread that exits the process once its parent has gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved once in the parent: the child runs as little as possible before exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child killed by `sig` when this process dies (Linux), else None.

    SIGKILL by default: the parent that would collect the results is gone, and every file a
    worker writes (metrics, checkpoints, the study database) is written atomically.
    """
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return arm


def watch_parent(parent: int | None = None, every: float = 1.0) -> threading.Thread:
    """Exit this process (status 1) soon after `parent` (default: the current parent) is gone.

    A fallback where the kernel cannot do it (not Linux): polls `os.getppid()`, which changes
    when the parent dies and the process is re-parented.
    """
    parent = os.getppid() if parent is None else parent

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    thread = threading.Thread(target=loop, name="watch-parent", daemon=True)
    thread.start()
    return thread


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True
