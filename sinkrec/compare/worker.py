"""One run of a comparison, in its own process: `python -m sinkrec.compare SPEC.json`.

A run is finished when its metrics.json has test metrics; one with metrics.json but no test
metrics was stopped mid-training and is resumed from its checkpoint (`sinkrec.api.train`,
resume=True); one without metrics.json starts over. Baselines (`pop`, `itemknn`) are fitted in
one pass on the training split and scored by the same full-ranking evaluator
(`sinkrec.training.baselines`, which `sinkrec train` uses for its baseline rows too).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sinkrec.compare")


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it has none (or a half-written one)."""
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def finished(folder: Path) -> bool:
    metrics = read_metrics(folder)
    return bool(metrics and metrics.get("test"))


def fit_baseline(cfg, folder: Path, dataset=None) -> dict[str, Any]:
    """Fit a counting baseline on the training split, score it like any model, write its metrics.json."""
    from ..data import load_dataset
    from ..training import runfolder
    from ..training.baselines import fit_and_score

    data = dataset or load_dataset(cfg.data)
    scored = fit_and_score(cfg.model, data, cfg)
    metric = cfg.eval.valid_metric
    result = {"dataset": data.name, "model": cfg.model["name"], "seed": cfg.train.seed, "best_epoch": 0,
              "valid": scored["valid"], "test": scored["test"], "epochs": 0, "train_seconds": scored["fit_seconds"],
              "filter_seen": cfg.eval.filter_seen, "fitted": True,
              "history": [{"epoch": 0, f"valid_{metric}": scored["valid"][metric]}]}
    folder.mkdir(parents=True, exist_ok=True)
    runfolder.atomic_write(folder / runfolder.MANIFEST, json.dumps(result, indent=2).encode())
    return result


def timed_trainer(minutes: float):
    """A Trainer that ends after the epoch in which its training time passes `minutes`."""
    from ..training.trainer import Trainer

    class TimedTrainer(Trainer):
        def train_epoch(self) -> dict[str, float]:
            started = time.perf_counter()
            stats = super().train_epoch()
            if self.train_seconds + time.perf_counter() - started >= 60 * minutes:
                self.cfg.train.epochs = self.epoch + 1  # the loop stops after this epoch
            return stats

    return TimedTrainer


def run(spec: dict[str, Any]) -> None:
    from ..api import make_config, train

    folder = Path(spec["folder"])
    if finished(folder):
        log.info("%s: finished earlier, reused", folder.name)
        return
    raw = dict(spec["config"], output_dir=str(folder))
    cfg = make_config(raw)
    from ..models.registry import MODELS

    if getattr(MODELS[cfg.model["name"]][0], "fitted", False):
        fit_baseline(cfg, folder)
        return
    resume = read_metrics(folder) is not None
    minutes = spec.get("budget", {}).get("minutes")
    if minutes is None:
        train(raw, output_dir=folder, overwrite=not resume, resume=resume, baselines=False)  # pop/itemknn: own jobs
        return
    from ..data import load_dataset

    trainer = timed_trainer(float(minutes))(cfg, load_dataset(cfg.data))
    if resume:
        trainer.resume(folder)
    trainer.fit()


def main(argv: list[str] | None = None) -> int:
    from ..procs import watch_parent

    watch_parent()  # where the kernel cannot end it with its parent (see sinkrec.procs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    run(json.loads(Path((argv or sys.argv[1:])[0]).read_text()))
    return 0
