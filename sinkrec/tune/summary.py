"""What a finished study leaves behind: best config, trials table, test score once, plots."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("sinkrec.tune")


def trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        steps = sorted(t.intermediate_values)
        rows.append({"number": t.number, "state": t.state.name.lower(),
                     "value": t.value if t.value is not None else (t.intermediate_values[steps[-1]] if steps else None),
                     "epochs": t.user_attrs.get("epochs", steps[-1] if steps else None),
                     "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
                     **{f"param {k}": v for k, v in t.params.items()}})
    return rows


def write_report(study, out: Path, metric: str, space: dict[str, Any]) -> dict[str, Any]:
    """best.yaml, trials.md/.csv, history.png, importance.png; the best trial scored once on test."""
    from ..api import evaluate

    rows = trial_rows(study)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, keys)
        writer.writeheader()
        writer.writerows(rows)
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail", "running")}
    lines = [f"Study `{study.study_name}`: {len(rows)} trials ({', '.join(f'{n} {s}' for s, n in counts.items() if n)})"
             f"; value = validation {metric} (of a pruned trial: its last reported epoch).", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    result: dict[str, Any] = {"trials": rows, "counts": counts, "study": study.study_name}
    if not complete:
        print("\n".join(lines) + "\nno trial completed: no best config")
        return result
    best = study.best_trial
    config = dict(best.user_attrs["config"])
    config["output_dir"] = str(Path("runs") / f"tuned-{study.study_name}")
    test = evaluate(best.user_attrs["run"], "test")  # the only time the test split is scored
    header = (f"# Best of study '{study.study_name}' (trial {best.number} of {len(rows)}): validation {metric} "
              f"{best.value:.4f}, test {metric} {test.get(metric, float('nan')):.4f} (scored once).\n"
              f"# Rerun: sinkrec train --config {(out / 'best.yaml').resolve()}\n")
    (out / "best.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))
    (out / "best.json").write_text(json.dumps({"trial": best.number, "params": best.params, "valid": best.value,
                                               "metric": metric, "test": test, "run": best.user_attrs["run"]},
                                              indent=2))
    result.update(best_trial=best.number, best_value=best.value, best_params=best.params, test=test)
    missing = plots(study, out)
    print("\n".join(lines))
    print(f"best trial {best.number}: validation {metric} {best.value:.4f}, test {test.get(metric, 0):.4f}; "
          f"params {best.params}")
    print(f"wrote {out / 'best.yaml'}, {out / 'trials.md'}, {out / 'trials.csv'}" + (f"; {missing}" if missing else
          f", {out / 'history.png'}, {out / 'importance.png'}"))
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def plots(study, out: Path) -> str | None:
    """Optimisation history and parameter importances as PNG; a note when they cannot be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances
    except ImportError:
        return "matplotlib is not installed: no plots (pip install 'sinkrec[plots]')"
    import warnings

    notes = []
    warnings.filterwarnings("ignore", message=".*is experimental.*")
    for name, draw in (("history", plot_optimization_history), ("importance", plot_param_importances)):
        try:
            ax = draw(study)
            ax.figure.tight_layout()
            ax.figure.savefig(out / f"{name}.png", dpi=110)
            plt.close(ax.figure)
        except Exception as exc:  # importance needs ≥ 2 finished trials that differ; never fail the study
            notes.append(f"no {name}.png ({type(exc).__name__}: {exc})")
    return "; ".join(notes) or None
