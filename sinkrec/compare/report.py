"""The comparison's table and files: mean ± std over seeds, best per column, noise and pop notes.

Two models are "within noise" on a column when their means differ by less than the larger of
their standard deviations over seeds: a gap that a reseed could close is not a ranking.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

COLUMNS = ["ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr"]
BASELINES = ("pop", "itemknn")


def group(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records by model, in the order the models were asked for."""
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record["model"], []).append(record)
    return out


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(records: list[dict[str, Any]], columns: list[str] = COLUMNS, primary: str = "ndcg@10"
              ) -> dict[str, Any]:
    """Per model: mean/std per column; the best model per column; within-noise pairs; flags."""
    rows = {}
    for model, rs in group(records).items():
        cells = {c: stats([r["metrics"][c] for r in rs]) for c in columns if all(c in r["metrics"] for r in rs)}
        rows[model] = {"seeds": len(rs), "cells": cells, "epochs": stats([float(r["epochs"]) for r in rs])[0],
                       "train_seconds": stats([float(r["train_seconds"]) for r in rs])[0]}
    best = {c: max((m for m in rows if c in rows[m]["cells"]), key=lambda m: rows[m]["cells"][c][0], default=None)
            for c in columns}
    noise = []
    ranked = sorted((m for m in rows if primary in rows[m]["cells"]), key=lambda m: -rows[m]["cells"][primary][0])
    for upper, lower in zip(ranked, ranked[1:]):
        (mu_a, sd_a), (mu_b, sd_b) = rows[upper]["cells"][primary], rows[lower]["cells"][primary]
        if mu_a - mu_b < max(sd_a, sd_b) or mu_a == mu_b:
            noise.append((upper, lower, mu_a - mu_b, max(sd_a, sd_b)))
    flags = {}
    if "pop" in rows and primary in rows["pop"]["cells"]:
        floor = rows["pop"]["cells"][primary][0]
        flags = {m: "below pop" for m in rows if m not in BASELINES and primary in rows[m]["cells"]
                 and rows[m]["cells"][primary][0] < floor}
    return {"rows": rows, "best": best, "noise": noise, "flags": flags, "primary": primary, "columns": columns}


def markdown(summary: dict[str, Any], protocol: str) -> str:
    columns, rows = summary["columns"], summary["rows"]
    lines = ["| model | seeds | " + " | ".join(c.upper() for c in columns)
             + " | epochs | train s | note |", "|---|---|" + "---|" * len(columns) + "---|---|---|"]
    for model, row in rows.items():
        cells = []
        for c in columns:
            if c not in row["cells"]:
                cells.append("–")
                continue
            mean, std = row["cells"][c]
            text = f"{mean:.4f} ± {std:.4f}" if row["seeds"] > 1 else f"{mean:.4f}"
            cells.append(f"**{text}**" if summary["best"][c] == model else text)
        note = summary["flags"].get(model, "deterministic" if model in BASELINES else "")
        lines.append(f"| {model} | {row['seeds']} | " + " | ".join(cells)
                     + f" | {row['epochs']:.0f} | {row['train_seconds']:.0f} | {note} |")
    text = "\n".join(lines) + "\n\nBold: best mean per column. " + protocol + "\n"
    for upper, lower, diff, std in summary["noise"]:
        text += (f"\n- {upper} vs {lower}: {summary['primary']} differs by {diff:.4f}, less than the larger "
                 f"std over seeds ({std:.4f}): within noise.")
    for model, flag in summary["flags"].items():
        text += f"\n- {model} is {flag} on {summary['primary']}: it ranks worse than item popularity alone."
    return text.rstrip() + "\n"


def terminal(summary: dict[str, Any]) -> str:
    """A fixed-width table for the console; `*` marks the best mean per column."""
    columns, rows = summary["columns"], summary["rows"]
    head = f"{'model':<10}{'seeds':>6}" + "".join(f"{c:>20}" for c in columns) + "  note"
    lines = [head, "-" * len(head)]
    for model, row in rows.items():
        line = f"{model:<10}{row['seeds']:>6}"
        for c in columns:
            mean, std = row["cells"].get(c, (math.nan, math.nan))
            mark = "*" if summary["best"][c] == model else " "
            line += f"{mean:>10.4f} ± {std:.4f}{mark}"
        lines.append(line + "  " + summary["flags"].get(model, ""))
    for upper, lower, diff, std in summary["noise"]:
        lines.append(f"within noise: {upper} vs {lower} ({summary['primary']} gap {diff:.4f} < std {std:.4f})")
    return "\n".join(lines)


def git_commit(cwd: Path | None = None) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.node()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


def write_json(path: Path, records: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """The DESIGN.md results format: command, machine, date, git, records (+ the protocol)."""
    payload = {"command": "sinkrec " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "sinkrec"
               else "python " + shlex.join(sys.argv), "machine": machine(),
               "date": datetime.date.today().isoformat(), "git": git_commit(), "records": records, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def learning_curves(records: list[dict[str, Any]], metric: str, path: Path) -> str | None:
    """Validation metric per epoch (mean over seeds); baselines as flat lines. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no learning-curve PNG (pip install 'sinkrec[plots]')"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    key = f"valid_{metric}"
    longest = max((len(r.get("history", [])) for r in records), default=1)
    for model, rs in group(records).items():
        curves = [[h[key] for h in r.get("history", []) if key in h] for r in rs]
        if model in BASELINES or all(len(c) <= 1 for c in curves):
            value = statistics.mean(c[-1] for c in curves if c)
            ax.axhline(value, linestyle="--", linewidth=1, label=f"{model} (fitted)", color="grey" if model == "pop"
                       else None)
            continue
        n = min(len(c) for c in curves)
        mean = [statistics.mean(c[i] for c in curves) for i in range(n)]
        ax.plot(range(1, n + 1), mean, marker="o", markersize=3, label=f"{model} ({len(rs)} seeds)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.set_xlim(0.5, max(1, longest) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
