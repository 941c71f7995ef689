"""Quality study: train each (dataset, model, variant, seed) with `sinkrec train`, collect test metrics.

Runs are independent `sinkrec train` processes, several at a time (`--parallel`), so one GPU can
hold many small models at once. Writes `benchmarks/results/<name>.json` (DESIGN.md format) and a
markdown table of mean ± std over seeds.

    python benchmarks/quality.py --study sasrec-ml1m --parallel 4 --set data.path=.data/ml-1m.txt
"""

from __future__ import annotations

import argparse
import datetime
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

ROOT = Path(__file__).resolve().parents[1]


def budget(epochs: int) -> list[str]:
    """An equal training budget: fixed epochs, lr 2e-3 with warm-up + cosine, no early stop."""
    return [f"train.epochs={epochs}", "train.lr=0.002", "train.schedule=cosine", "train.warmup_steps=100",
            "train.patience=0"]


BUDGET60, BUDGET30 = budget(60), budget(30)

# the single switches of spec §3.6: (label, model config key, value)
ABLATIONS = [("no-memory", "use_memory", "false"), ("no-reinjection", "reinject", "false"),
             ("no-memory-kv", "attn_memory_kv", "false"), ("no-attention", "use_attention", "false"),
             ("no-write-suppression", "write_suppression", "false"),
             ("no-decay-suppression", "decay_suppression", "false"),
             ("no-diff-readout", "diff_readout", "false"), ("no-temporal", "temporal", "false"),
             ("R1", "loops", "1")]

LONG_CPU = ["data.synthetic.n_users=400", "data.synthetic.min_len=600", "data.synthetic.max_len=800",
            "data.max_len=512", "model.d_model=32", "train.epochs=15", "train.patience=0", "train.batch_size=16"]
NOISY = ["data.synthetic.routine_share=0.8", "data.synthetic.interest_noise=0.5"]


def sweep(extra: list[str], settings) -> list[tuple[str, str, str, list[str], list[int]]]:
    """SinkRec vs GDN on the CPU-sized long data at several (routine share, interest noise)."""
    return [(f"synthetic-share{share}-noise{noise}", "synthetic-long-sinkrec", m,
             [f"model.name={m}", f"data.synthetic.routine_share={share}", f"data.synthetic.interest_noise={noise}"]
             + LONG_CPU + extra, [0, 1])
            for share, noise in settings for m in ("gdn", "sinkrec")]


# study name → list of (dataset label, config, model/variant label, overrides, seeds)
STUDIES: dict[str, list[tuple[str, str, str, list[str], list[int]]]] = {
    "sasrec-ml1m": [
        ("ml-1m", "ml-1m", "sasrec", [], [0, 1, 2]),
    ],
    "sasrec-ml1m-sweep": [
        ("ml-1m", "ml-1m", "sasrec", [], [0, 1, 2]),
        ("ml-1m", "ml-1m", "sasrec:d128", ["model.d_model=128"], [0]),
        ("ml-1m", "ml-1m", "sasrec:drop0.1", ["model.dropout=0.1"], [0]),
        ("ml-1m", "ml-1m", "sasrec:d128-3l", ["model.d_model=128", "model.n_layers=3"], [0]),
    ],
    "gdn-ml1m": [
        ("ml-1m", "ml-1m-gdn", "gdn", [], [0, 1, 2]),
        ("ml-1m", "ml-1m-gdn", "gdn:d128", ["model.d_model=128"], [0]),
        ("ml-1m", "ml-1m-gdn", "gdn:d128-3l", ["model.d_model=128", "model.n_layers=3"], [0]),
        ("ml-1m", "ml-1m-gdn", "gdn:drop0.1", ["model.dropout=0.1"], [0]),
    ],
    # issue #4: SinkRec on ML-1M (3 seeds) and each single-switch ablation (1 seed)
    "sinkrec-ml1m": [("ml-1m", "ml-1m-sinkrec", "sinkrec", [], [0, 1, 2])] + [
        ("ml-1m", "ml-1m-sinkrec", f"sinkrec:{name}", [f"model.{key}={value}"], [0])
        for name, key, value in ABLATIONS],
    "sinkrec-ml1m-seeds": [("ml-1m", "ml-1m-sinkrec", "sinkrec", [], [0, 1, 2])],
    # same budget for each: 60 epochs, lr 2e-3 with warm-up + cosine (fits one 10-minute GPU call)
    "ml1m-budget60": [("ml-1m", "ml-1m-sinkrec", f"{m}:budget60", [f"model.name={m}"] + BUDGET60, seeds)
                      for m, seeds in (("sinkrec", [0, 1, 2]), ("gdn", [0]))] + [
        ("ml-1m", "ml-1m-sinkrec", "sinkrec:budget60-no-memory", ["model.use_memory=false"] + BUDGET60, [0])],
    # every single-switch ablation next to SinkRec and GDN at one shorter, equal budget (one GPU call)
    "ml1m-budget30-ablations": [("ml-1m", "ml-1m-sinkrec", f"{m}:budget30", [f"model.name={m}"] + BUDGET30, [0])
                                for m in ("sinkrec", "gdn")] + [
        ("ml-1m", "ml-1m-sinkrec", f"sinkrec:budget30-{name}", [f"model.{key}={value}"] + BUDGET30, [0])
        for name, key, value in ABLATIONS],
    "ml1m-budget60-sinkrec": [("ml-1m", "ml-1m-sinkrec", "sinkrec:budget60", BUDGET60, [0, 1, 2])],
    # choices the spec leaves open, at the same budget: distinct stacked blocks (as GDN's two layers)
    # instead of one block looped twice, fewer codes, a one-item pattern, a lighter VQ loss
    "ml1m-budget60-variants": [("ml-1m", "ml-1m-sinkrec", f"sinkrec:budget60-{name}", sets + BUDGET60, seeds)
                               for name, sets, seeds in (
                                   ("2blocks", ["model.n_blocks=2", "model.loops=1"], [0, 1]),
                                   ("2blocks-R2", ["model.n_blocks=2"], [0]),
                                   ("2blocks-no-memory", ["model.n_blocks=2", "model.loops=1",
                                                          "model.use_memory=false"], [0]),
                                   ("codes64", ["model.rvq_codes=64"], [0]),
                                   ("pattern1", ["model.pattern_len=1"], [0]),
                                   ("vq0.1", ["model.vq_weight=0.1"], [0]))] + [
        ("ml-1m", "ml-1m-sinkrec", "gdn:budget60", ["model.name=gdn"] + BUDGET60, [1])],
    # more seeds of the best of those (no memory, two distinct blocks) and of GDN
    "ml1m-budget60-seeds": [
        ("ml-1m", "ml-1m-sinkrec", "sinkrec:budget60-2blocks-no-memory",
         ["model.n_blocks=2", "model.loops=1", "model.use_memory=false"] + BUDGET60, [1, 2]),
        ("ml-1m", "ml-1m-sinkrec", "gdn:budget60", ["model.name=gdn"] + BUDGET60, [2])],
    "synthetic-long": [("synthetic-long", "synthetic-long-sinkrec", m, [f"model.name={m}"], [0, 1, 2])
                       for m in ("sasrec", "gdn", "sinkrec")],
    "ml1m-ts-half": [("ml-1m-ts-half", "ml-1m-ts-half-sinkrec", m, [f"model.name={m}"], [0])
                     for m in ("sasrec", "gdn", "sinkrec")],
    # a CPU-sized long-history comparison (400 users × 600–800 events, d=32, 15 epochs)
    "synthetic-long-cpu": [("synthetic-long-cpu", "synthetic-long-sinkrec", m, [f"model.name={m}"] + LONG_CPU, [0, 1])
                           for m in ("gdn", "sinkrec")],
    # the same CPU shape where one item no longer names the interest: a high routine share and noisy
    # interest items, so the interest has to be pooled over items that lie many routines apart
    "synthetic-noisy-cpu": [("synthetic-noisy-cpu", "synthetic-long-sinkrec", m, [f"model.name={m}"] + LONG_CPU + NOISY,
                             [0, 1]) for m in ("gdn", "sinkrec")],
    # where the state sink should matter: SinkRec vs GDN as the routine share and the interest noise grow
    "synthetic-sweep": sweep([], [(share, noise) for share in (0.6, 0.8, 0.9) for noise in (0.0, 0.5)]),
    # three of them trained to convergence: does the gap stay, or was it only faster learning?
    "synthetic-sweep-long": sweep(["train.epochs=60", "train.patience=8"], [(0.6, 0.0), (0.8, 0.5), (0.9, 0.5)]),
    "sessa-ml1m": [("ml-1m", "ml-1m-sessa", "sessa", [], [0])],
    "smoke": [
        ("synthetic", "synthetic", "sasrec", ["train.epochs=1"], [0, 1]),
    ],
}


def run_one(job: dict, common: list[str], device: str, out_root: Path, data_dir: str | None, resume: bool) -> dict:
    folder = out_root / f"{job['dataset']}-{job['variant'].replace(':', '-')}-s{job['seed']}"
    config = ROOT / "configs" / f"{job['config']}.yaml"
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
    if resume and (folder / "last.pt").exists() and not finished:
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
    git = args.git or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip()
    path = Path(args.results or ROOT / "benchmarks" / "results" / f"quality-{args.study}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_one, j, args.set, args.device, out_root, args.data_dir, args.resume) for j in jobs]
        for future in as_completed(futures):  # results are written as runs finish
            records.append(future.result())
            payload = {"command": "python " + shlex.join(sys.argv), "machine": args.machine,
                       "date": datetime.date.today().isoformat(), "git": git, "records": records,
                       "complete": len(records) == len(jobs)}
            path.write_text(json.dumps(payload, indent=2))
            path.with_suffix(".md").write_text(summarize(records) + "\n")
    print(summarize(records))


if __name__ == "__main__":
    main()
