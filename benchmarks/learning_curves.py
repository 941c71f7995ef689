"""Validation NDCG@10 per epoch of several runs, averaged over seeds: does a model learn faster, or
does it reach a higher ceiling? Reads run `metrics.json` files (or the `<run>.metrics.json` copies that
`gpu_session.sh train` brings back), groups them by name without the `-s<seed>` suffix, and writes a
PNG (one panel per setting) and a JSON summary: best validation NDCG@10 and the first epoch at which
each group reaches 95% of it.

    python benchmarks/learning_curves.py benchmarks/results/synthetic-sweep-long-runs/*.json \
        --name learning-curves-synthetic-sweep-long
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from common import write_results

MODELS = ("gdn", "sinkrec", "sasrec", "sessa")


def load_groups(paths: list[str]) -> dict[tuple[str, str], list[list[float]]]:
    """(setting, model) → one validation-NDCG@10 curve per seed."""
    groups: dict[tuple[str, str], list[list[float]]] = {}
    for path in map(Path, paths):
        name = re.sub(r"\.metrics$", "", path.stem) if path.name != "metrics.json" else path.parent.name
        run = re.sub(r"-s\d+$", "", name)
        model = next((m for m in MODELS if run.endswith(f"-{m}")), None)
        if model is None:
            raise SystemExit(f"{path}: cannot tell the model from the run name '{name}' (expected -<model>-s<seed>)")
        history = json.loads(path.read_text()).get("history")
        if not history:
            raise SystemExit(f"{path}: no per-epoch history")
        groups.setdefault((run[: -len(model) - 1], model), []).append([h["valid_ndcg@10"] for h in history])
    return groups


def summarize(curves: list[list[float]]) -> dict:
    """Mean over seeds up to the shortest run (early stopping ends runs at different epochs)."""
    length = min(map(len, curves))
    mean = np.mean([c[:length] for c in curves], axis=0)
    best = float(mean.max())
    return {"seeds": len(curves), "epochs": length, "best_valid_ndcg@10": round(best, 4),
            "epoch_to_95pct_of_best": int(np.argmax(mean >= 0.95 * best)) + 1,
            "valid_ndcg@10_at_5_10_15": [round(float(mean[e - 1]), 4) for e in (5, 10, 15) if e <= length],
            "curve": [round(float(x), 4) for x in mean]}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", nargs="+", help="metrics.json files of the runs")
    parser.add_argument("--name", default="learning-curves", help="results/<name>.json and .png")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    groups = load_groups(args.metrics)
    records = [{"setting": setting, "model": model, **summarize(curves)}
               for (setting, model), curves in sorted(groups.items())]
    path = write_results(args.name, records)
    print("| setting | model | seeds | best valid NDCG@10 | epoch to 95% | at epoch 5 / 10 / 15 |")
    print("|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['setting']} | {r['model']} | {r['seeds']} | {r['best_valid_ndcg@10']:.4f} | "
              f"{r['epoch_to_95pct_of_best']} | {' / '.join(f'{x:.3f}' for x in r['valid_ndcg@10_at_5_10_15'])} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({r["setting"] for r in records})
    fig, axes = plt.subplots(1, len(settings), figsize=(4.5 * len(settings), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for r in (r for r in records if r["setting"] == setting):
            ax.plot(range(1, r["epochs"] + 1), r["curve"], label=f"{r['model']} ({r['seeds']} seeds)")
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid NDCG@10 (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    print(f"wrote {path} and {path.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
