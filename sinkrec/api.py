"""The public Python API: load a dataset, train, evaluate, recommend.

    import sinkrec
    run = sinkrec.train(data="ratings.csv", model="gdn")      # leave-one-out, full ranking
    print(run.test["ndcg@10"])
    rec = sinkrec.Recommender.from_run(run.path)
    rec.recommend(["1193", "661", "914"], k=10)

The CLI is a thin layer over these functions, so both share one way of building a run.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, DataConfig, from_dict, load_yaml, merge, parse_override, resolve_config_path
from .errors import SinkrecError

log = logging.getLogger("sinkrec")

# `sinkrec train` with no data and no config: the built-in synthetic benchmark, sized for a
# 2-core CPU. Routines repeat by design, so seen items stay rankable (filter_seen: false).
# These demo settings apply to the built-in data only.
DEMO_RUN: dict[str, Any] = {
    "data": {"dataset": "synthetic", "max_len": 100},
    "model": {"name": "sinkrec", "d_model": 64, "dropout": 0.1},
    "train": {"epochs": 8, "batch_size": 32, "lr": 2e-3, "patience": 3},  # 32 optimiser steps an epoch
    "eval": {"filter_seen": False},
    "output_dir": "runs/synthetic",
}
DEFAULT_MODEL = "gdn"  # for a user's own data: the most accurate and fastest model we measured
RUN_FILES = ("metrics.json", "best.pt", "last.pt")  # any of these: the folder holds a run (last.pt: < 0.2)


def run_config(data: str | Path | None = None, model: str | None = None, config: str | Path | dict | None = None,
               overrides: list[str] | tuple[str, ...] = (), device: str | None = None,
               output_dir: str | Path | None = None) -> dict[str, Any]:
    """The raw config of a run, before validation: what `sinkrec train` and `sinkrec.train` both build.

    - `config` (a YAML file, a shipped config name or a mapping) is the base when given;
    - else `data` gets the default protocol (leave-one-out, full ranking, `filter_seen: true`);
    - else the built-in synthetic demo runs with its own settings.
    `data` and `model` override the base; `overrides` are `key=value` strings, applied last.
    Without `config` and `data`, a `data.path=FILE` (or `data.dataset=FILE`) override means `data=FILE`:
    the same run as `sinkrec train FILE`, never the demo's settings on a user's file.
    A data file is stored by its absolute path, so the run can be evaluated from any folder.
    Model names are case-insensitive.
    """
    if config is None and data is None:
        data, overrides = _data_from_overrides(overrides)
    if isinstance(config, dict):
        raw = json.loads(json.dumps(config))
    elif config is not None:
        raw = load_yaml(resolve_config_path(config))
    elif data is not None:
        raw = {"model": {"name": DEFAULT_MODEL}}
    else:
        raw = json.loads(json.dumps(DEMO_RUN))
    if data is not None:
        raw = merge(raw, {"data": {"dataset": str(data)}})
        raw["data"].pop("path", None)
    if model is not None:
        model = model.lower()
        raw["model"] = {"name": model} if (raw.get("model") or {}).get("name") != model else raw["model"]
    for text in overrides:
        raw = merge(raw, parse_override(text))
    if isinstance((raw.get("model") or {}).get("name"), str):
        raw["model"]["name"] = raw["model"]["name"].lower()
    _absolute_data(raw.get("data") or {})
    if device is not None:
        raw = merge(raw, {"train": {"device": device}})
    if output_dir is not None:
        raw["output_dir"] = str(output_dir)
    elif "output_dir" not in raw:
        dataset = (raw.get("data") or {}).get("dataset", "synthetic")
        raw["output_dir"] = str(Path("runs") / f"{Path(str(dataset)).stem}-{(raw.get('model') or {}).get('name')}")
    return raw


def _data_from_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[str | None, list[str]]:
    """(the file a `data.path=` / `data.dataset=` override names, the other overrides)."""
    found, rest = None, []
    for text in overrides:
        section = parse_override(text).get("data")
        if isinstance(section, dict) and len(section) == 1 and ("path" in section or "dataset" in section) \
                and isinstance(next(iter(section.values())), str):
            found = next(iter(section.values()))
        else:
            rest.append(text)
    return found, rest


def _absolute_data(data: dict[str, Any]) -> None:
    """data.path, and a data.dataset naming an existing file, made absolute (catalogue names stay names)."""
    from .data.catalog import CATALOG

    for key in ("dataset", "path"):
        value = data.get(key)
        if not isinstance(value, str) or value == "synthetic" or (key == "dataset" and value in CATALOG):
            continue
        path = Path(value).expanduser()
        if path.is_file():
            data[key] = str(path.resolve())


def fresh_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """`path` if it holds no run (or `overwrite`), else the first free `path-2`, `path-3`, …"""
    path = Path(path)
    if overwrite or not any((path / name).exists() for name in RUN_FILES):
        return path
    n = 2
    while any((path.with_name(f"{path.name}-{n}") / name).exists() for name in RUN_FILES):
        n += 1
    fresh = path.with_name(f"{path.name}-{n}")
    log.warning("%s already holds a run; writing to %s (pass overwrite / --overwrite to replace it)", path, fresh)
    return fresh


def make_config(raw: dict[str, Any]) -> Config:
    """Validate a raw nested mapping (RecBole aliases allowed) into a Config, model options included."""
    from .experiment import make_config as build

    return build(raw)


def load_dataset(dataset: str | Path | DataConfig = "synthetic", **options: Any):
    """A split dataset: 'synthetic', a catalogue name (`sinkrec datasets`) or a file, plus `data.` options.

    Example: `load_dataset("ratings.csv", max_len=50, columns={"user": "uid", "item": "iid"})`.
    """
    from .data import load_dataset as load

    if isinstance(dataset, DataConfig):
        cfg = dataset
    else:
        cfg = from_dict(DataConfig, {"dataset": str(dataset), **options}, where="data")
    return load(cfg)


@dataclass
class Run:
    """A finished (or resumed) run folder: its config, metrics and checkpoint (see training.runfolder)."""

    path: Path
    config: Config
    best_epoch: int = 0
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    oracle: dict[str, dict[str, float]] | None = None  # synthetic data only: the generator's scores, a ceiling
    baselines: dict[str, dict[str, Any]] | None = None  # pop / itemknn on the same split: the floor to beat
    warnings: list[str] = field(default_factory=list)  # what a user should act on (also logged)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        from .training import runfolder

        path = Path(path)
        metrics = runfolder.read_manifest(path)
        if metrics is None:
            raise SinkrecError(f"{path}: not a run folder (no metrics.json naming a trained epoch)")
        return cls(path=path, config=make_config(metrics["config"]), best_epoch=metrics.get("best_epoch", 0),
                   valid=metrics.get("valid") or {}, test=metrics.get("test") or {},
                   history=metrics.get("history") or [], oracle=metrics.get("oracle"),
                   baselines=metrics.get("baselines"))

    def recommender(self):
        from .recommend import Recommender

        return Recommender.from_run(self.path)

    def evaluate(self, split: str = "test", **options: Any) -> dict[str, float]:
        return evaluate(self.path, split, **options)


def train(config: str | Path | dict | Config | None = None, *, data: str | Path | None = None,
          model: str | None = None, overrides: list[str] | tuple[str, ...] = (), device: str | None = None,
          output_dir: str | Path | None = None, overwrite: bool = False, resume: bool | str | Path = False,
          baselines: bool = True) -> Run:
    """Train one model and score its best checkpoint on the test split; see `run_config` for the arguments.

    A folder that already holds a run is never overwritten unless `overwrite=True`: a fresh
    numbered folder is used instead. `resume=True` continues the run in OUTPUT exactly (`resume=PATH`:
    the run folder PATH, continued into OUTPUT); config keys other than
    `training.fingerprint.SAFE_ON_RESUME` must not change. One process at a time trains into a folder.
    The config and the data are checked before any folder is made, and a run that fails before its
    first epoch leaves no folder behind. `baselines`: also fit pop and itemknn on the same split
    (seconds; off for very large data), recorded in metrics.json and in `Run.baselines`.
    """
    from .data import load_dataset as load
    from .experiment import check_environment
    from .training import lock, runfolder

    if isinstance(config, Config):
        config = config.to_dict()
    raw = run_config(data, model, config, overrides, device, output_dir)
    cfg = make_config(raw)
    check_environment(cfg)  # device, writable output_dir, optional packages: before any data is read
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:  # under torchrun only rank 0 reports
        logging.getLogger().setLevel(logging.WARNING)
    if resume or overwrite:  # the folder itself is reused: find out it is busy before loading the data
        lock.ensure_free(cfg.output_dir)
    dataset = load(cfg.data)
    if not resume:
        cfg.output_dir = str(fresh_output_dir(cfg.output_dir, overwrite))
    with runfolder.claimed(cfg.output_dir, main_rank):  # one writer per folder; no empty folder if it fails
        return _train(cfg, dataset, resume, baselines and main_rank)


def _train(cfg: Config, dataset, resume: bool | str | Path, baselines: bool) -> Run:
    from .training.baselines import below_floor, score_all
    from .training.distributed import cleanup
    from .training.trainer import Trainer, pick_device

    store = dataset.store
    log.info("data %s: %d users, %d items, %d events (mean length %.1f)", dataset.name, store.n_users,
             store.n_items, len(store.items), len(store.items) / store.n_users)
    scores = None
    if baselines:  # before the trainer seeds its RNG: a run is the same with or without them
        scores = score_all(dataset, cfg, pick_device(cfg.train.device))
        metric = cfg.eval.valid_metric
        log.info("baselines (the floor to beat): %s", ", ".join(
            f"{name} valid {metric} {row['valid'][metric]:.4f}" for name, row in scores.items()))
    trainer = Trainer(cfg, dataset)
    trainer.baselines = scores
    if resume:
        trainer.resume(Path(cfg.output_dir) if resume is True or resume == "auto" else resume)
    log.info("model %s: %.2fM parameters, device %s", cfg.model["name"],
             sum(p.numel() for p in trainer.model.parameters()) / 1e6, trainer.device)
    result = trainer.fit()
    cleanup(trainer.dist)
    warnings = list(trainer.warnings)
    floor = below_floor(result.test, trainer.baselines or {}, cfg.eval.valid_metric)
    if floor:
        log.warning(floor)
        warnings.append(floor)
    return Run(path=result.output_dir, config=cfg, best_epoch=result.best_epoch, valid=result.valid,
               test=result.test, history=result.history, oracle=trainer.oracle, baselines=trainer.baselines,
               warnings=warnings)


def evaluate(checkpoint: str | Path, split: str = "test", filter_seen: bool | None = None,
             device: str = "auto", data: str | Path | None = None) -> dict[str, float]:
    """Full-ranking metrics of a run folder (its best epoch) or model file, on the data it was trained on.

    The data file is the one the run recorded (an absolute path since 0.2), or `data` when given
    (the same file moved elsewhere). Refused (CheckpointError) when that data changed since training:
    see `training.fingerprint`.
    """
    from .data import load_dataset as load
    from .eval.evaluate import evaluate as score
    from .training import checkpoint as ckpt
    from .training import runfolder
    from .training.fingerprint import check_data, data_fingerprint
    from .training.trainer import pick_device

    payload = runfolder.load_model(checkpoint)
    model, cfg = ckpt.model_from_checkpoint(payload, str(checkpoint))
    if filter_seen is not None:
        cfg.eval.filter_seen = filter_seen
    if data is not None:
        cfg.data.path = str(Path(data).expanduser().resolve())
    recorded = cfg.data.path or cfg.data.dataset
    if data is None and Path(recorded).is_absolute() and not Path(recorded).exists():
        raise SinkrecError(f"{checkpoint}: its data file {recorded} is gone; pass the file's new place with "
                           f"--data PATH (sinkrec.evaluate(..., data=PATH))")
    dataset = load(cfg.data)
    check_data(payload["fingerprint"], data_fingerprint(cfg.data, dataset.store), str(checkpoint), "evaluate it")
    target = pick_device(device)
    return score(model.to(target), dataset.split, split, cfg.eval, cfg.data.max_len, target)


def __getattr__(name: str):  # Recommender and Session live in recommend.py (torch); import them on use
    if name in ("Recommender", "Session"):
        from . import recommend

        return getattr(recommend, name)
    raise AttributeError(name)
