"""Seconds per epoch of a study trial when 1 or K trials share one GPU: how many to run side by side.

The tuned study (benchmarks/study.py) runs up to 14 trials at once on one GPU and its longest
trials (Beauty, 30 epochs) barely fit a device window. This launches each stage's `sinkrec train`
processes at once (the study's overrides, `--epochs` epochs each), waits, and reads the epoch
seconds from their run folders. The first epoch (Triton autotuning, caches) is reported apart.
Throughput is epochs per minute over all processes of a stage, from the steady epochs.

    python benchmarks/trial_speed.py --stages beauty:gdn:1,beauty:sinkrec:1,beauty:gdn:14 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import CHILD_ENV, COMMON, DATASETS  # noqa: E402  (the study's settings, not a copy)


def stage(dataset: str, model: str, count: int, epochs: int, work: Path, device: str) -> dict:
    catalogue, overrides, _, _ = DATASETS[dataset]
    folder = work / f"{dataset}-{model}-x{count}"
    procs = []
    started = time.monotonic()
    for i in range(count):
        cmd = [sys.executable, "-m", "sinkrec.cli", "train", catalogue, "--model", model, "--device", device,
               "--output", str(folder / f"run-{i}"), "--overwrite", "--no-baselines",
               "--set", f"train.epochs={epochs}", "--set", "train.progress=false"]
        cmd += [a for o in COMMON + overrides for a in ("--set", o)]
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / f"run-{i}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=CHILD_ENV))
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - started
    first, steady = [], []
    for i in range(count):
        try:
            history = json.loads((folder / f"run-{i}" / "metrics.json").read_text())["history"]
        except (OSError, ValueError, KeyError):
            continue
        first.append(history[0]["seconds"])
        steady += [h["seconds"] for h in history[1:]]
    row = {"dataset": dataset, "model": model, "processes": count, "epochs": epochs,
           "failed": sum(c != 0 for c in codes),
           "wall_s": round(wall, 1), "first_epoch_s": round(statistics.median(first), 2) if first else None,
           "epoch_s": round(statistics.median(steady), 2) if steady else None}
    if steady:
        row["epochs_per_min"] = round(60 * count / statistics.median(steady), 2)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", required=True, help="DATASET:MODEL:PROCESSES,... (datasets of benchmarks/study.py)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--work", default="/tmp/trial-speed")
    p.add_argument("--out", default=".", help="folder for trial_speed.json")
    p.add_argument("--git", default="")
    args = p.parse_args()
    rows = []
    for spec in args.stages.split(","):
        dataset, model, count = spec.split(":")
        rows.append(stage(dataset, model, int(count), args.epochs, Path(args.work), args.device))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| dataset | model | processes | first epoch (s) | epoch (s) | epochs/min, all | failed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['model']} | {r['processes']} | {r['first_epoch_s']} | {r['epoch_s']} | "
              f"{r.get('epochs_per_min')} | {r['failed']} |")
    out = Path(args.out) / "trial_speed.json"
    out.write_text(json.dumps({"command": " ".join(sys.argv), "git": args.git, "machine": os.uname().nodename,
                               "records": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
