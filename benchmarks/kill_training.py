"""Fault injection: SIGKILL `sinkrec train` at random moments, resume, and check nothing was lost.

Each cycle trains a tiny synthetic run into a fresh folder, killing it KILLS times: at a random
save step (SINKREC_FAULT_AT: inside a file write, between the files and the manifest, between
the manifest and best.pt, while deleting old files) or after a random delay. After every kill the
folder must load and its files agree (`runfolder.verify`); the last `--resume` must finish with
metrics bitwise equal to an uninterrupted run's.

    python benchmarks/kill_training.py --min-kills 50      # ~10 minutes on 2 CPUs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data": {"dataset": "synthetic", "max_len": 20,
                 "synthetic": {"n_users": 40, "n_items": 50, "n_clusters": 4, "min_len": 8, "max_len": 20}},
        "model": {"name": "sasrec", "d_model": 8, "n_layers": 1, "dropout": 0.1},
        "train": {"epochs": 6, "batch_size": 8, "progress": False, "patience": 0},
        "eval": {"filter_seen": False}}
SAVE_STEPS = 9  # fault points per epoch, at most: 3 atomic writes × 2, best.pt, 2 deletions
VOLATILE = ("train_seconds", "seconds")  # wall-clock times: the only fields allowed to differ


def train(folder: Path, config: Path, fault_at: int | None = None, kill_after: float | None = None) -> int:
    """One `sinkrec train --resume` process; its return code (-9 when killed)."""
    cmd = [sys.executable, "-m", "sinkrec.cli", "train", "--config", str(config), "--output", str(folder),
           "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("SINKREC_FAULT_AT", None)
    if fault_at is not None:
        env["SINKREC_FAULT_AT"] = str(fault_at)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"train failed ({proc.returncode}): {err.decode()[-2000:]}")
    return proc.returncode


def check(folder: Path) -> str:
    """'epoch N committed' or 'nothing committed'; raises when the folder does not load or disagrees."""
    from sinkrec.recommend import Recommender
    from sinkrec.training import checkpoint, runfolder

    manifest = runfolder.verify(folder)
    if manifest is None:
        return "nothing committed"
    Recommender.from_run(folder)
    if (folder / "best.pt").exists():  # refreshed after the commit: a whole model file, maybe one best behind
        held = checkpoint.read(folder / "best.pt")["epoch"]
        assert held <= manifest["best_epoch"], f"best.pt holds epoch {held} > manifest {manifest['best_epoch']}"
    return f"epoch {manifest['checkpoint']['epoch']} committed"


def comparable(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics = {k: v for k, v in metrics.items() if k not in VOLATILE}
    metrics["config"] = {k: v for k, v in metrics["config"].items() if k != "output_dir"}
    metrics["history"] = [{k: v for k, v in row.items() if k not in VOLATILE} for row in metrics["history"]]
    return metrics


def cycle(work: Path, config: Path, reference: dict, kills: int, rng: random.Random, span: float,
          epochs: int) -> list[dict]:
    """Kill one run `kills` times, then let it finish; a record per kill."""
    from sinkrec.training import runfolder

    folder = work / f"run-{rng.randrange(10**9)}"
    records: list[dict] = []
    while len(records) < kills:
        manifest = runfolder.read_manifest(folder) if folder.is_dir() else None
        done = manifest["checkpoint"]["epoch"] if manifest else 0
        if manifest and manifest.get("test") is not None:
            break  # finished before all kills were spent: the remaining kills go to the next cycle
        if rng.random() < 0.6:
            how, fault, delay = "save step", rng.randint(1, SAVE_STEPS * (epochs - done) + 2), None
        else:
            how, fault, delay = "timer", None, rng.uniform(0.5, span)
        code = train(folder, config, fault, delay)
        records.append({"kill": how, "at": fault if fault is not None else round(delay, 2),
                        "killed": code != 0, "state": check(folder)})
    train(folder, config)
    final = comparable(folder)
    assert check(folder).startswith("epoch"), "the finished run does not load"
    from sinkrec.training import checkpoint

    same = final == reference and checkpoint.read(folder / "best.pt")["epoch"] == final["best_epoch"]
    for record in records:
        record["resumed_equal"] = same
    return records


def reference_run(work: Path, config: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    folder = work / "reference"
    assert train(folder, config) == 0
    return comparable(folder), time.perf_counter() - started


def write_config(work: Path, epochs: int) -> Path:
    config = work / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": epochs}}))
    return config


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-kills", type=int, default=50, help="run cycles until this many processes were killed")
    parser.add_argument("--kills", type=int, default=4, help="kills per cycle before the run may finish")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/sinkrec-kill")
    parser.add_argument("--results", help="results JSON (default benchmarks/results/kill_training.json)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work, args.epochs)
    reference, seconds = reference_run(work, config)
    rng = random.Random(args.seed)
    records: list[dict] = []
    n = 0
    while sum(r["killed"] for r in records) < args.min_kills:
        rows = cycle(work, config, reference, args.kills, rng, seconds, args.epochs)
        records += [{"cycle": n, **row} for row in rows]
        n += 1
        print(f"cycle {n:>2}: " + "; ".join(f"{r['kill']} {r['at']} → {r['state']}" for r in rows)
              + f"; resumed equal: {rows[-1]['resumed_equal']}", flush=True)
    killed = sum(r["killed"] for r in records)
    print(f"\n{'kill':<10}{'tries':>7}{'killed':>8}{'loadable':>10}{'resumed equal':>15}")
    for how in ("save step", "timer"):
        rows = [r for r in records if r["kill"] == how]
        print(f"{how:<10}{len(rows):>7}{sum(r['killed'] for r in rows):>8}{len(rows):>10}"
              f"{sum(r['resumed_equal'] for r in rows):>15}")
    summary = {"kills": killed, "tries": len(records), "all_loadable": True,
               "all_resumed_equal": all(r["resumed_equal"] for r in records), "cycles": n,
               "epochs": args.epochs, "reference_seconds": round(seconds, 1)}
    print(json.dumps(summary))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import write_results

    print(f"wrote {write_results('kill_training', records, args.results, extra={'summary': summary})}")
    if not summary["all_resumed_equal"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
