"""Helpers shared by the benchmark scripts: results file format (DESIGN.md) and GPU timing."""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.node()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


def write_results(name: str, records: list[dict], out: str | None = None, git: str = "", host: str = "",
                  extra: dict | None = None) -> Path:
    """The one results writer (DESIGN.md): {"command", "machine", "date", "git", "records"} (+ `extra`).

    `git` and `host` (the "machine" field) default to this checkout's commit and this machine; pass
    them where the tree travelled without .git or the runs happened elsewhere. Returns the path written.
    """
    git = git or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    payload = {"command": "python " + shlex.join(sys.argv), "machine": host or machine(),
               "date": datetime.date.today().isoformat(), "git": git, "records": records, **(extra or {})}
    path = Path(out) if out else ROOT / "benchmarks" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return path


def gpu_time_ms(fn, warmup: int = 3, repeats: int = 20) -> float:
    """Median of CUDA-event timings."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def peak_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
