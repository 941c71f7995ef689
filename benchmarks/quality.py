"""Quality study: train each (dataset, model, variant, seed) with `sinkrec train`, collect test metrics.

Runs are independent `sinkrec train` processes, several at a time (`--parallel`), so one GPU can
hold many small models at once. Writes `benchmarks/results/<name>.json` (DESIGN.md format) and a
markdown table of mean ± std over seeds.

    python benchmarks/quality.py --study sasrec-ml1m --parallel 4 --set data.path=.data/ml-1m.txt
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, write_results  # noqa: E402
from experiments import STUDIES  # noqa: E402

from sinkrec import configs  # noqa: E402


def run_one(job: dict, common: list[str], device: str, out_root: Path, data_dir: str | None, resume: bool) -> dict:
    folder = out_root / f"{job['dataset']}-{job['variant'].replace(':', '-')}-s{job['seed']}"
    config = configs.locate(job["config"])
    if config is None:
        raise SystemExit(f"no shipped config '{job['config']}' (see `sinkrec config list`)")
    cmd = [sys.executable, "-m", "sinkrec.cli", "train", "--config", str(config),
           "--output", str(folder), "--device", device, "--set", f"train.seed={job['seed']}",
           "--set", "train.progress=false"]
    path = (yaml.safe_load(config.read_text()).get("data") or {}).get("path")
    if data_dir and path:  # the same file, somewhere else (e.g. carried to a GPU machine)
        cmd += ["--set", f"data.path={Path(data_dir) / Path(path).name}"]
    for text in job["overrides"] + common:
        cmd += ["--set", text]
    started = time.time()
    metrics = folder / "metrics.json"
    finished = metrics.exists() and json.loads(metrics.read_text()).get("test") is not None
    if resume and metrics.exists() and not finished:  # metrics.json: the run folder's manifest
        cmd.append("--resume")  # continue where an earlier (time-limited) call stopped
    if not (resume and finished):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        with open(out_root / f"{folder.name}.log", "a") as log:
            log.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            print(f"FAILED {folder.name}: {proc.stderr[-800:]}", flush=True)
            return {**job, "error": proc.stderr[-2000:]}
    result = json.loads(metrics.read_text())
    model, _, variant = job["variant"].partition(":")
    record = {"dataset": job["dataset"], "model": model, "variant": variant or "default", "seed": job["seed"],
              "split": "test", "metrics": {k: round(v, 5) for k, v in result["test"].items()},
              "valid_metrics": {k: round(v, 5) for k, v in result["valid"].items()},
              "epochs": result["epochs"], "best_epoch": result["best_epoch"],
              "train_seconds": result["train_seconds"], "wall_seconds": round(time.time() - started, 1),
              "command": shlex.join(cmd[1:])}
    if "oracle" in result:
        record["oracle"] = result["oracle"]["test"]
    print(f"done {folder.name}: test ndcg@10 {record['metrics']['ndcg@10']:.4f} hr@10 "
          f"{record['metrics']['hr@10']:.4f} ({record['wall_seconds']}s)", flush=True)
    return record


def summarize(records: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if "error" not in r:
            groups.setdefault((r["dataset"], r["model"], r["variant"]), []).append(r)
    lines = ["| dataset | model | variant | seeds | NDCG@10 | HR@10 | MRR | epochs |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    for (dataset, model, variant), rs in groups.items():
        lines.append(f"| {dataset} | {model} | {variant} | {len(rs)} | "
                     f"{cell([r['metrics']['ndcg@10'] for r in rs])} | {cell([r['metrics']['hr@10'] for r in rs])} | "
                     f"{cell([r['metrics']['mrr'] for r in rs])} | {cell([float(r['best_epoch']) for r in rs])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", choices=sorted(STUDIES))
    which.add_argument("--merge", nargs="+", metavar="RESULTS",
                       help="mean ± std over the records of these results files together (seeds of one run "
                            "label from several studies); --results X.md also writes the table, then exit")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], help="override applied to every run")
    parser.add_argument("--data-dir", help="read each config's data file from this folder instead")
    parser.add_argument("--models", help="comma-separated: only runs of these models")
    parser.add_argument("--variants", help="comma-separated: only these variant labels (e.g. sinkrec:budget30)")
    parser.add_argument("--runs-dir", default="runs/quality")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs in --runs-dir and continue unfinished ones from their last.pt")
    parser.add_argument("--results", default=None, help="output JSON (default benchmarks/results/quality-<study>.json)")
    parser.add_argument("--machine", default=platform.node())
    parser.add_argument("--git", default="", help="commit to record where the tree travels without .git")
    args = parser.parse_args()
    if args.merge:
        table = summarize([r for f in args.merge for r in json.loads(Path(f).read_text())["records"]])
        if args.results:
            Path(args.results).write_text(table + "\n")
        print(table)
        return

    jobs = [{"dataset": d, "config": c, "variant": v, "overrides": o, "seed": s}
            for d, c, v, o, seeds in STUDIES[args.study] for s in seeds
            if (not args.models or v.partition(":")[0] in args.models.split(","))
            and (not args.variants or v in args.variants.split(","))]
    out_root = ROOT / args.runs_dir
    out_root.mkdir(parents=True, exist_ok=True)
    print(f"{len(jobs)} runs, {args.parallel} at a time", flush=True)
    records: list[dict] = []
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_one, j, args.set, args.device, out_root, args.data_dir, args.resume) for j in jobs]
        for future in as_completed(futures):  # results are written as runs finish
            records.append(future.result())
            path = write_results(f"quality-{args.study}", records, args.results, args.git, args.machine,
                                 extra={"complete": len(records) == len(jobs)})
            path.with_suffix(".md").write_text(summarize(records) + "\n")
    print(summarize(records))


if __name__ == "__main__":
    main()
