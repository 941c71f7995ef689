"""A study as plain JSON, so it can be committed, read in review, and continued on another machine.

`export_trials` writes every trial (settings, state, per-epoch values, attributes); `import_trials`
rebuilds them into a new storage in the same order, so trial numbers, the pruner's history and the
duplicate check all carry over. A trial still running at export time is written as failed: the
process that ran it is gone once the state leaves its machine.
"""

from __future__ import annotations

import json
from typing import Any


def export_trials(study) -> list[dict[str, Any]]:
    import optuna

    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        state = trial.state.name
        rows.append({
            "number": trial.number,
            "state": "FAIL" if state in ("RUNNING", "WAITING") else state,
            "value": trial.value,
            "params": trial.params,
            "distributions": {k: json.loads(optuna.distributions.distribution_to_json(d))
                              for k, d in trial.distributions.items()},
            "intermediate": {str(step): value for step, value in sorted(trial.intermediate_values.items())},
            "user_attrs": trial.user_attrs,
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "completed": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
            "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
        })
    return rows


def import_trials(study, rows: list[dict[str, Any]]) -> int:
    """Add the exported trials to an empty study; the number added."""
    import datetime

    import optuna

    def when(text):
        return datetime.datetime.fromisoformat(text) if text else None

    if study.get_trials(deepcopy=False):
        raise ValueError(f"study '{study.study_name}' already has trials: import into an empty one")
    for row in sorted(rows, key=lambda r: r["number"]):
        distributions = {k: optuna.distributions.json_to_distribution(json.dumps(d))
                         for k, d in row["distributions"].items()}
        state = optuna.trial.TrialState[row["state"]]
        study.add_trial(optuna.trial.FrozenTrial(
            number=row["number"], trial_id=row["number"], state=state,
            value=row["value"] if state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) else None,
            datetime_start=when(row.get("started")), datetime_complete=when(row.get("completed")) or (
                when(row.get("started")) if state.is_finished() else None),
            params=row["params"], distributions=distributions, user_attrs=row["user_attrs"], system_attrs={},
            intermediate_values={int(step): value for step, value in row["intermediate"].items()}))
    return len(rows)
