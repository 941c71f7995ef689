"""Sessa vs Transformer vs gated-delta-rule mixer on SymbolSoup and Diffuse MQAR (spec/sessa.md §5).

Same decoder, same optimiser, steps and data; only the sequence mixer differs (the training
itself is `sinkrec.lm.task_training`). Each (task, mixer, seed) trains in its own process
(`--parallel`), so one GPU holds several. Writes benchmarks/results/sessa_tasks.json and a
mean ± std table; checkpoints go to runs/sessa_tasks/.

    python benchmarks/sessa_tasks.py --device cuda --parallel 12 --steps 1500
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_results  # noqa: E402

from sinkrec.lm.task_training import MIXERS, train_task  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="symbolsoup,mqar")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--train-lag", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--out", default="runs/sessa_tasks")
    parser.add_argument("--results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: task,mixer,seed for a worker process
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.one:
        task, mixer, seed = args.one.split(",")
        print(json.dumps(train_task(task, mixer, int(seed), args.steps, args.device, Path(args.out), args.d_model,
                                    args.train_lag)))
        return
    jobs = [(t, m, int(s)) for t in args.tasks.split(",") for m in MIXERS for s in args.seeds.split(",")]

    def launch(job):
        cmd = [sys.executable, __file__, "--one", ",".join(map(str, job)), "--steps", str(args.steps),
               "--device", args.device, "--out", args.out, "--d-model", str(args.d_model),
               "--train-lag", str(args.train_lag)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"FAILED {job}: {proc.stderr[-600:]}", flush=True)
            return {"task": job[0], "model": job[1], "seed": job[2], "error": proc.stderr[-1000:]}
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"done {job}: {record['metrics']} ({record['train_seconds']}s)", flush=True)
        return record

    with ThreadPoolExecutor(args.parallel) as pool:
        records = list(pool.map(launch, jobs))
    path = write_results("sessa_tasks", records, args.results)
    lines = ["| task | metric | model | seeds | accuracy | params |", "|---|---|---|---|---|---|"]
    for task in args.tasks.split(","):
        done = [r for r in records if r["task"] == task and "metrics" in r]
        for metric in (done[0]["metrics"] if done else {}):
            for mixer in MIXERS:
                values = [r["metrics"][metric] for r in done if r["model"] == mixer]
                if values:
                    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
                    params = next(r["params"] for r in done if r["model"] == mixer)
                    lines.append(f"| {task} | {metric} | {mixer} | {len(values)} | "
                                 f"{statistics.mean(values):.4f}{spread} | {params:,} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
