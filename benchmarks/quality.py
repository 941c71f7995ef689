"""Quality studies: each entry of experiments.STUDIES run by `sinkrec compare` (one protocol, resumable).

This script only names the studies (benchmarks/experiments.py) and gathers their records into
`benchmarks/results/quality-<study>.json` (DESIGN.md format) with a markdown table; running,
parallelism, resuming and the per-entry tables are `sinkrec compare`'s.

    python benchmarks/quality.py --study sasrec-ml1m --parallel 4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, write_results  # noqa: E402
from experiments import STUDIES  # noqa: E402

from sinkrec import configs  # noqa: E402
from sinkrec.compare import compare  # noqa: E402


def run_entry(entry: tuple, common: list[str], device: str | None, parallel: int, runs_dir: Path,
              data_dir: str | None = None) -> list[dict]:
    """One study entry (dataset label, config, model:variant, overrides, seeds) through `compare`."""
    dataset, config, label, overrides, seeds = entry
    model, _, variant = label.partition(":")
    sets = list(overrides) + list(common)
    path = ((yaml.safe_load(configs.locate(config).read_text()) or {}).get("data") or {}).get("path")
    if data_dir and path:  # the same file, somewhere else (e.g. carried to a GPU machine)
        sets.append(f"data.path={Path(data_dir) / Path(path).name}")
    out = runs_dir / f"{dataset}-{label.replace(':', '-')}"
    result = compare(None, [model], seeds=list(seeds), budget=None, parallel=parallel, device=device, out=out,
                     config=config, overrides=sets)
    return [{**r, "dataset": dataset, "variant": variant or "default"} for r in result["records"]]


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


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", choices=sorted(STUDIES))
    which.add_argument("--merge", nargs="+", metavar="RESULTS",
                       help="mean ± std over the records of these results files together (seeds of one run "
                            "label from several studies); --results X.md also writes the table, then exit")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--set", action="append", default=[], help="override applied to every run")
    parser.add_argument("--data-dir", help="read each entry's data file from this folder instead")
    parser.add_argument("--models", help="comma-separated: only runs of these models")
    parser.add_argument("--variants", help="comma-separated: only these variant labels (e.g. sinkrec:budget30)")
    parser.add_argument("--runs-dir", default="runs/quality", help="reruns reuse finished runs found here")
    parser.add_argument("--results", default=None, help="output JSON (default benchmarks/results/quality-<study>.json)")
    parser.add_argument("--machine", default=platform.node())
    parser.add_argument("--git", default="", help="commit to record where the tree travels without .git")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.merge:
        table = summarize([r for f in args.merge for r in json.loads(Path(f).read_text())["records"]])
        if args.results:
            Path(args.results).write_text(table + "\n")
        print(table)
        return
    entries = [e for e in STUDIES[args.study]
               if (not args.models or e[2].partition(":")[0] in args.models.split(","))
               and (not args.variants or e[2] in args.variants.split(","))]
    records: list[dict] = []
    for entry in entries:
        records += run_entry(entry, args.set, args.device, args.parallel, ROOT / args.runs_dir / args.study,
                             args.data_dir)
        path = write_results(f"quality-{args.study}", records, args.results, args.git, args.machine,
                             extra={"complete": entry is entries[-1]})
        path.with_suffix(".md").write_text(summarize(records) + "\n")
    print(summarize(records))


if __name__ == "__main__":
    main()
