"""`sinkrec tune`: Optuna search over a model's options, selected on validation only.

TPE proposes each trial; a pruner (median, or successive halving) stops a trial whose per-epoch
validation metric falls behind. Trials never score the test split: once the study is done, the
best trial's checkpoint is scored on test exactly once. The study lives in an Optuna storage
(SQLite in OUT by default; any URL, e.g. PostgreSQL, lets machines share it), so several workers
add trials to one study: `--workers N` here, or `sinkrec tune ... --storage URL --join` elsewhere.
A study resumes: rerun the same command after a kill and it continues to `--trials` in all (loop.py).
Outputs: OUT/best.yaml (a config that `sinkrec train --config` reruns), OUT/trials.md and
trials.csv, OUT/history.png and OUT/importance.png.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SinkrecError
from ..procs import die_with_parent
from .loop import check_new_settings, run_trials, trial_folder

log = logging.getLogger("sinkrec.tune")
SPACES = Path(__file__).parent / "spaces"


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise SinkrecError("`sinkrec tune` needs Optuna: pip install 'sinkrec[tune]'") from None
    return optuna


def load_space(model: str, path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """A search space: dotted config key → {type: float|int|categorical, low, high, log | choices}."""
    file = Path(path) if path else SPACES / f"{model}.yaml"
    if not file.is_file():
        shipped = ", ".join(sorted(p.stem for p in SPACES.glob("*.yaml")))
        raise ConfigError(f"no search space {file}" + ("" if path else f" for '{model}' (shipped: {shipped}; "
                                                                       "pass --space FILE)"))
    from ..config import load_yaml

    space = load_yaml(file)  # size, alias and depth checks before anything is built from it
    for key, spec in space.items():
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical") or (
                spec["type"] == "categorical" and not spec.get("choices")) or (
                spec["type"] != "categorical" and not ("low" in spec and "high" in spec)):
            raise ConfigError(f"{file}: '{key}' needs type float|int with low/high, or categorical with choices")
    return space


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's values, one per key of the space."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return values


def with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    from ..config import merge, parse_override

    for key, value in values.items():
        raw = merge(raw, parse_override(f"{key}={json.dumps(value)}"))
    return raw


def trial_trainer(trial, metric: str):
    """A Trainer that reports each epoch's validation metric to Optuna, and never scores test."""
    from ..training.trainer import Trainer

    optuna = optuna_module()

    class TrialTrainer(Trainer):
        def evaluate(self, which: str) -> dict[str, float]:
            if which == "test":
                return {}  # model selection on validation only; the best trial is scored on test later
            metrics = super().evaluate(which)
            trial.report(metrics[metric], self.epoch + 1)
            if trial.should_prune():
                trial.set_user_attr("epochs", self.epoch + 1)
                raise optuna.TrialPruned(f"validation {metric} {metrics[metric]:.4f} at epoch {self.epoch + 1}")
            return metrics

    return TrialTrainer


def objective(base: dict[str, Any], space: dict[str, dict[str, Any]], out: Path):
    from ..api import make_config
    from ..data import load_dataset

    datasets: dict[str, Any] = {}

    def run(trial) -> float:
        folder = trial_folder(out, trial.number)
        values = suggest(trial, space)
        resume_from = trial.user_attrs.get("resume_from")  # a killed trial's settings, queued to continue it
        if resume_from is None:
            check_new_settings(trial, values)
        raw = with_values(dict(base, output_dir=str(folder)), values)
        cfg = make_config(raw)
        key = json.dumps(raw["data"], sort_keys=True)
        if key not in datasets:  # one load per process: trials only change model and training options
            datasets[key] = load_dataset(cfg.data)
        data = datasets[key]
        metric = cfg.eval.valid_metric
        trial.set_user_attr("config", raw)
        trainer = trial_trainer(trial, metric)(cfg, data)
        if resume_from is not None:
            trainer.resume(resume_from)
            for record in trainer.history:  # the pruner compares every epoch: report the ones already run
                trial.report(record[f"valid_{metric}"], record["epoch"])
        result = trainer.fit()
        trial.set_user_attr("epochs", len(result.history))
        return result.valid[metric]

    return run


def _storage(url: str, heartbeat: float = 60.0):
    """The study's storage; a database one with a heartbeat, so trials of a lost worker end as failed."""
    optuna = optuna_module()
    if "://" not in url:
        return url
    import warnings

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}  # writers wait for the lock
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is marked experimental
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=int(max(1, heartbeat)),
                                          grace_period=int(max(3, 3 * heartbeat)))


def _sampler_seed(seed: int, worker: int, trials_so_far: int) -> int:
    """Differs per worker and per restart, so a resumed study does not redraw its first settings."""
    import zlib

    return zlib.crc32(f"{seed}/{worker}/{trials_so_far}".encode())


def _pruner(name: str, startup: int, epochs: int):
    """Median pruning acts from a third of the budget on: early epochs under warm-up say little."""
    optuna = optuna_module()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=max(1, epochs // 3))
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def base_config(data, model, config, overrides, device, budget: str) -> dict[str, Any]:
    from ..api import run_config
    from ..compare import Budget
    from ..config import merge

    plan = Budget.parse(budget)
    if plan.kind != "epochs":
        raise ConfigError("`sinkrec tune --budget` takes epochs:N (pruning needs the epoch as its step)")
    raw = run_config(data, model, config, overrides, device)
    return merge(raw, {"train": {**plan.train_settings(), "progress": False}})


def tune(data: str | None, model: str, trials: int = 30, space: str | None = None, storage: str | None = None,
         study: str | None = None, workers: int = 1, pruner: str = "median", budget: str = "epochs:20",
         out: str | Path = "runs/tune", config: str | None = None, overrides: list[str] | tuple[str, ...] = (),
         device: str | None = None, seed: int = 0, join: bool = False, pruner_startup: int = 5,
         worker: int = 0, timeout: float | None = None) -> dict[str, Any]:
    """Create (or join, or resume) a study, run it to `trials` trials in all over `workers` processes, report."""
    from ..models.registry import MODELS

    if model in MODELS and getattr(MODELS[model][0], "fitted", False):
        raise ConfigError(f"model '{model}' is a counting baseline with nothing to tune; compare it with "
                          "`sinkrec compare --models pop,itemknn,...`")
    optuna = optuna_module()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out / 'study.db'}"
    study_name = study or f"{model}-{Path(str(data)).stem if data else 'synthetic'}"
    base = base_config(data, model, config, overrides, device, budget)
    search = load_space(model, space)
    metric = (base.get("eval") or {}).get("valid_metric", "ndcg@10")
    the_study = optuna.create_study(storage=_storage(storage), study_name=study_name, direction="maximize",
                                    pruner=_pruner(pruner, pruner_startup, base["train"]["epochs"]),
                                    load_if_exists=True)
    the_study.sampler = optuna.samplers.TPESampler(seed=_sampler_seed(seed, worker, len(the_study.trials)))
    the_study.set_user_attr("metric", metric)
    if join or workers <= 1:
        run_trials(the_study, objective(base, search, out), trials, out, timeout)
        if join:
            return {"study": the_study}
    else:  # every worker runs trials until the study holds `trials` in all
        common = ["--model", model, "--budget", budget, "--pruner", pruner, "--pruner-startup", str(pruner_startup),
                  "--storage", storage, "--study", study_name, "--out", str(out), "--join", "--trials", str(trials),
                  "--seed", str(seed)]
        common += ([data] if data else []) + (["--space", str(space)] if space else [])
        common += (["--config", str(config)] if config else []) + (["--device", device] if device else [])
        common += (["--timeout", str(timeout)] if timeout else [])
        common += [arg for text in overrides for arg in ("--set", text)]
        procs = [subprocess.Popen([sys.executable, "-m", "sinkrec.cli", "tune", *common, "--worker", str(k)],
                                  preexec_fn=die_with_parent()) for k in range(workers)]
        if any(p.wait() for p in procs):
            log.warning("a worker exited with an error; the report covers the trials that finished")
    return report(the_study, out, metric, search)


def report(study, out: Path, metric: str, space: dict[str, Any]) -> dict[str, Any]:
    from .summary import write_report

    return write_report(study, out, metric, space)
