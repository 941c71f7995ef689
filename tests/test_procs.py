"""Workers die with their parent: a SIGKILLed `compare` leaves no training processes behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")

TINY = ["data.synthetic.n_users=60", "data.synthetic.n_items=80", "data.synthetic.n_clusters=4",
        "data.synthetic.min_len=10", "data.synthetic.max_len=30", "data.max_len=30", "model.d_model=16",
        "train.batch_size=32"]


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from sinkrec.procs import die_with_parent
    guard = die_with_parent() if sys.argv[1] == "guarded" else None
    child = subprocess.Popen(["sleep", "120"], preexec_fn=guard)
    print(child.pid, flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("mode", ["guarded", "plain"])
def test_guarded_child_dies_with_its_parent_and_a_plain_one_does_not(mode):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert alive(child)
        parent.kill()
        parent.wait()
        gone = wait_for(lambda: not alive(child), 5.0)
        assert gone == (mode == "guarded")  # the plain one shows the test can fail
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def killed_parent_leaves_no_workers(args: list[str]) -> None:
    """`sinkrec ARGS` (TINY data) starts 2 worker processes; SIGKILL it: the workers must die too."""
    cmd = [sys.executable, "-m", "sinkrec.cli", *args]
    for text in TINY:
        cmd += ["--set", text]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    workers: list[int] = []
    try:
        assert wait_for(lambda: len(children(parent.pid)) == 2, 120.0), f"{args[0]} did not start 2 workers"
        workers = children(parent.pid)
        time.sleep(1.0)  # let them get into training
        assert all(alive(pid) for pid in workers)
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 10.0), "workers outlived their parent"
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def test_killed_compare_leaves_no_workers(tmp_path):
    killed_parent_leaves_no_workers(["compare", "--models", "sasrec", "--seeds", "2", "--budget", "epochs:10000",
                                     "--parallel", "2", "--device", "cpu", "--out", str(tmp_path / "cmp")])


def test_killed_tune_leaves_no_workers(tmp_path):
    killed_parent_leaves_no_workers(["tune", "--model", "sasrec", "--trials", "4", "--workers", "2", "--budget",
                                     "epochs:10000", "--pruner", "none", "--device", "cpu", "--out",
                                     str(tmp_path / "tune")])
