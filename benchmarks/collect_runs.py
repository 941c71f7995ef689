"""Turn run folders' metrics (possibly of runs stopped early) into a results file (DESIGN.md format).

Reads `<run>.metrics.json` (written by the trainer every epoch) and, for runs stopped before their
end, `<run>.test.json` (`sinkrec evaluate <run> --split test` on the best checkpoint so far). Each
record says whether training finished (`"finished"`) and after how many epochs it stopped.

    python benchmarks/collect_runs.py RUNS_DIR --name quality-sinkrec-partial --machine "..."
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from common import write_results

PATTERN = re.compile(r"^(?P<dataset>.+?)-(?P<model>sasrec|gdn|sinkrec)(?:-(?P<variant>.+?))?-s(?P<seed>\d+)$")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--machine", default="")
    parser.add_argument("--git", default="")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    records = []
    for path in sorted(args.runs.glob("*.metrics.json")):
        run = path.name.removesuffix(".metrics.json")
        match = PATTERN.match(run)
        metrics = json.loads(path.read_text())
        test, finished = metrics.get("test"), metrics.get("test") is not None
        scored = path.with_name(f"{run}.test.json")
        if test is None and scored.exists():
            test = json.loads(scored.read_text())["metrics"]
        record = {"dataset": match["dataset"], "model": match["model"], "variant": match["variant"] or "default",
                  "seed": int(match["seed"]), "split": "test" if test else "valid",
                  "metrics": {k: round(v, 5) for k, v in (test or metrics["valid"]).items()},
                  "valid_metrics": {k: round(v, 5) for k, v in metrics["valid"].items()},
                  "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"], "finished": finished,
                  "train_seconds": metrics["train_seconds"]}
        records.append(record)
    write_results(args.name, records, git=args.git, host=args.machine)
    print(f"{'run':<44}{'split':<7}{'ndcg@10':>9}{'hr@10':>8}{'epochs':>8}  finished")
    for r in records:
        print(f"{r['dataset'] + '-' + r['model'] + '-' + r['variant'] + '-s' + str(r['seed']):<44}{r['split']:<7}"
              f"{r['metrics']['ndcg@10']:>9.4f}{r['metrics']['hr@10']:>8.4f}{r['epochs']:>8}  {r['finished']}")


if __name__ == "__main__":
    main()
