"""`sinkrec compare`: several models × seeds under one protocol and one explicit budget.

Every run gets the same data (filters and split), the same evaluation (full ranking, seen items
per `eval.filter_seen`), the same training settings and the same budget: exactly N epochs with
early stopping off (`epochs:N`), or the same training wall time (`minutes:M`). The best epoch on
validation is scored once on test. Runs are separate processes (`--parallel`, several per GPU)
in `OUT/runs/MODEL-sSEED`; a rerun reuses finished runs and resumes unfinished ones, so a killed
comparison continues where it stopped. Outputs: OUT/compare.json (DESIGN.md results format),
OUT/compare.md and OUT/learning_curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SinkrecError
from ..procs import die_with_parent
from . import report
from .worker import finished, read_metrics

log = logging.getLogger("sinkrec.compare")
FITTED = ("pop", "itemknn")  # deterministic: fitted once, not per seed
UNLIMITED_EPOCHS = 1_000_000  # a wall-time budget ends training, not an epoch count


@dataclass(frozen=True)
class Budget:
    kind: str  # "epochs" | "minutes" | "config" (each run as its config says: train.epochs, train.patience)
    value: float

    @classmethod
    def parse(cls, text: str | None) -> Budget:
        if text is None or text == "config":
            return cls("config", 0)
        kind, _, value = str(text).partition(":")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if kind not in ("epochs", "minutes") or number <= 0 or (kind == "epochs" and number != int(number)):
            raise ConfigError(f"--budget expects epochs:N (an integer) or minutes:M (a number > 0), got '{text}'")
        return cls(kind, int(number) if kind == "epochs" else number)

    def train_settings(self) -> dict[str, Any]:
        if self.kind == "config":
            return {}
        epochs = int(self.value) if self.kind == "epochs" else UNLIMITED_EPOCHS
        return {"epochs": epochs, "patience": 0}

    def describe(self) -> str:
        if self.kind == "config":
            return "each run trains as its config says (train.epochs, early stopping per train.patience)"
        if self.kind == "epochs":
            return f"every neural model trains exactly {int(self.value)} epochs (early stopping off)"
        return f"every neural model trains for the same {self.value:g} minutes of training time (early stopping off)"


def _split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    model = [o for o in overrides if o.strip().startswith("model.")]
    return [o for o in overrides if o not in model], model


def plan(data: str | None, models: list[str], seeds: int | list[int], budget: Budget, out: Path,
         config: str | None = None, overrides: list[str] | tuple[str, ...] = (), device: str | None = None
         ) -> tuple[list[dict], list[str]]:
    """The job specs (one per model × seed; one for a fitted baseline) and notes on skipped overrides."""
    from ..api import make_config, run_config
    from ..config import merge, parse_override
    from ..models.registry import MODELS

    common, model_sets = _split_overrides(overrides)
    jobs, notes = [], []
    for name in models:
        if name not in MODELS:
            raise ConfigError(f"unknown model '{name}' in --models; known: {', '.join(sorted(MODELS))}")
        raw = run_config(data, name, config, common, device)
        raw["model"] = {"name": name}  # each model at its own defaults; the protocol is shared
        fields = {f.name for f in dataclasses.fields(MODELS[name][1])}
        for text in model_sets:
            key = text.split("=", 1)[0].strip().split(".", 1)[1]
            if key in fields:
                raw = merge(raw, parse_override(text))
            else:
                notes.append(f"--set {text} does not apply to {name} (not one of its options)")
        raw = merge(raw, {"train": {**budget.train_settings(), "progress": False}})
        for seed in ([0] if name in FITTED else range(seeds) if isinstance(seeds, int) else seeds):
            folder = out / "runs" / f"{name}-s{seed}"
            job_raw = merge(raw, {"train": {"seed": seed}, "output_dir": str(folder)})
            make_config(job_raw)  # a bad option fails here, before any process starts
            jobs.append({"name": folder.name, "model": name, "seed": seed, "folder": str(folder),
                         "config": job_raw, "budget": {budget.kind: budget.value}})
    return jobs, notes


def _check_spec(job: dict, out: Path) -> None:
    """A rerun must use the protocol the finished runs used; else their results would mix."""
    spec_file = out / "jobs" / f"{job['name']}.json"
    if spec_file.is_file():
        if json.loads(spec_file.read_text()) != job:
            raise SinkrecError(f"{out} holds a comparison started with other settings for {job['name']} "
                               f"(see {spec_file}); use another --out, or delete that folder to start over")
        return
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(job, indent=2, sort_keys=True))


def _launch(job: dict, out: Path, env: dict[str, str]) -> int:
    log_file = out / "logs" / f"{job['name']}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as handle:
        proc = subprocess.run([sys.executable, "-m", "sinkrec.compare", str(out / "jobs" / f"{job['name']}.json")],
                              stdout=handle, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent())
    return proc.returncode


def _worker_env(slot: int, parallel: int, device: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    if device and device.startswith("cuda"):
        import torch

        gpus = torch.cuda.device_count()
        if gpus > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)  # several runs share each GPU
    return env


def _units(job: dict) -> tuple[int, int]:
    """(done, total) progress units of a job: epochs for an epoch budget, else the run itself."""
    folder = Path(job["folder"])
    if finished(folder):
        total = int(job["budget"].get("epochs", 1)) if job["model"] not in FITTED else 1
        return total, total
    if job["model"] in FITTED or "epochs" not in job["budget"]:
        return 0, 1
    total = int(job["budget"]["epochs"])
    metrics = read_metrics(folder) or {}
    return min(total, len(metrics.get("history") or [])), total


class LogTail:
    """New per-epoch lines (and warnings) of the running workers' logs, for the console while models train."""

    def __init__(self, out: Path):
        self.out, self.offsets, self.warned = out, {}, set()

    def lines(self, name: str) -> list[str]:
        path = self.out / "logs" / f"{name}.log"
        if name not in self.offsets:  # a rerun appends to the log: show only what this run writes
            self.offsets[name] = path.stat().st_size if path.is_file() else 0
            return []
        try:
            with open(path, "rb") as handle:
                handle.seek(self.offsets[name])
                text = handle.read()
        except OSError:
            return []
        complete = text[: text.rfind(b"\n") + 1]  # a half-written line waits for the next look
        self.offsets[name] += len(complete)
        shown = []
        for line in complete.decode(errors="replace").splitlines():
            if " INFO epoch " in line:
                shown.append(line.split(" INFO ", 1)[1])
            elif " WARNING " in line and line.split(" ", 1)[1] not in self.warned:  # each warning once, not per run
                self.warned.add(line.split(" ", 1)[1])
                shown.append(line.split(" ", 1)[1])
        return shown


def run_jobs(jobs: list[dict], out: Path, parallel: int, device: str | None, progress: bool = True) -> list[str]:
    """Run every unfinished job, `parallel` at a time; returns the names of failed jobs."""
    from tqdm import tqdm

    pending = [j for j in jobs if not finished(Path(j["folder"]))]
    reused = len(jobs) - len(pending)
    print(f"{len(jobs)} runs: {reused} finished earlier (reused), {len(pending)} to run, {parallel} at a time",
          flush=True)
    failed: list[str] = []
    if not pending:
        return failed
    free = list(range(parallel))
    total = sum(_units(j)[1] for j in jobs)
    bar_on = progress and sys.stderr.isatty()  # in a log file, one line per finished run instead
    reported = {j["name"] for j in jobs if finished(Path(j["folder"]))}
    tail = LogTail(out)
    for job in pending:
        tail.lines(job["name"])  # the log's current end: earlier runs' lines are not shown again
    with ThreadPoolExecutor(parallel) as pool, tqdm(total=total, desc="compare", disable=not bar_on,
                                                   unit="epoch") as bar:
        def work(job: dict) -> None:
            slot = free.pop()
            try:
                if _launch(job, out, _worker_env(slot, parallel, device)) != 0 or not finished(Path(job["folder"])):
                    failed.append(job["name"])
            finally:
                free.append(slot)

        futures = [pool.submit(work, j) for j in pending]
        last_pass = False
        while not last_pass:
            last_pass = all(f.done() for f in futures)  # after the last worker ends: one more look at its log
            if not last_pass:
                time.sleep(1.0)
            bar.n = sum(_units(j)[0] for j in jobs)
            running = [j["name"] for j in pending if not finished(Path(j["folder"])) and Path(j["folder"]).exists()]
            bar.set_postfix_str(f"done {sum(finished(Path(j['folder'])) for j in jobs)}/{len(jobs)}; "
                                f"running {', '.join(running[:4])}")
            bar.refresh()
            for job in pending:
                for line in tail.lines(job["name"]) if progress else []:
                    tqdm.write(f"  {job['name']}: {line}")
                if job["name"] not in reported and finished(Path(job["folder"])):
                    reported.add(job["name"])
                    test = (read_metrics(Path(job["folder"])) or {}).get("test") or {}
                    tqdm.write(f"[{len(reported)}/{len(jobs)}] finished {job['name']}: test ndcg@10 "
                               f"{test.get('ndcg@10', float('nan')):.4f}")
        for future in futures:
            future.result()
        bar.n = sum(_units(j)[0] for j in jobs)
        bar.refresh()
    return failed


def record(job: dict, budget: Budget) -> dict[str, Any]:
    """A DESIGN.md quality record from a finished run's metrics.json."""
    metrics = read_metrics(Path(job["folder"])) or {}
    return {"dataset": metrics.get("dataset"), "model": job["model"], "variant": "default", "seed": job["seed"],
            "split": "test", "metrics": metrics["test"], "valid_metrics": metrics["valid"],
            "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"], "budget": f"{budget.kind}:{budget.value:g}",
            "history": [{k: v for k, v in h.items() if k == "epoch" or k.startswith("valid_")}
                        for h in metrics.get("history") or []]}


def dataset_summary(job: dict) -> dict[str, Any]:
    """Users, items, events and every note (filters, dropped users) of the data all runs share."""
    from ..api import make_config
    from ..data import load_dataset

    cfg = make_config(job["config"])
    data = load_dataset(cfg.data)
    store = data.store
    return {"name": data.name, "users": store.n_users, "items": store.n_items, "events": int(len(store.items)),
            "notes": list(store.notes), "split": getattr(cfg.data, "split", "leave-one-out"),
            "filter_seen": cfg.eval.filter_seen}


def compare(data: str | None, models: list[str], seeds: int | list[int] = 3, budget: str | None = "epochs:20",
            parallel: int = 1, device: str | None = None, out: str | Path = "runs/compare", config: str | None = None,
            overrides: list[str] | tuple[str, ...] = (), progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a comparison and write its table; returns the summary with the output paths."""
    out = Path(out)
    models = [name.lower() for name in models]
    plan_budget = Budget.parse(budget)
    jobs, notes = plan(data, models, seeds, plan_budget, out, config, overrides, device)
    for job in jobs:
        _check_spec(job, out)
    summary_data = dataset_summary(jobs[0])  # also builds the store cache once, before the workers start
    print(f"data {summary_data['name']}: {summary_data['users']} users, {summary_data['items']} items, "
          f"{summary_data['events']} events; split {summary_data['split']}")
    for text in summary_data["notes"] + notes:
        print(f"  note: {text}")
    print(f"budget: {plan_budget.describe()}", flush=True)
    failed = run_jobs(jobs, out, parallel, device, progress)
    done = [j for j in jobs if finished(Path(j["folder"]))]
    records = [record(j, plan_budget) for j in done]
    cfg0 = jobs[0]["config"]
    primary = (cfg0.get("eval") or {}).get("valid_metric", "ndcg@10")
    protocol = (f"Budget: {plan_budget.describe()}; baselines (pop, itemknn) are fitted in one pass on the same "
                f"training split. Model selection on validation {primary}; test scored once. Data: "
                f"{summary_data['name']}, {summary_data['users']} users, {summary_data['items']} items, split "
                f"{summary_data['split']}, seen items {'filtered' if summary_data['filter_seen'] else 'ranked'}. "
                f"Training settings shared by the neural models: {json.dumps(cfg0.get('train', {}))}.")
    summary = report.summarize(records, primary=primary if primary in report.COLUMNS else "ndcg@10")
    markdown = report.markdown(summary, protocol)
    if failed:
        markdown += f"\nFailed runs (see {out}/logs): {', '.join(failed)}\n"
    report.write_json(out / "compare.json", records, {
        "protocol": protocol, "budget": f"{plan_budget.kind}:{plan_budget.value:g}", "dataset_summary": summary_data,
        "complete": not failed and len(done) == len(jobs), "notes": notes})
    (out / "compare.md").write_text(markdown)
    missing = report.learning_curves(records, primary, out / "learning_curves.png") if records else None
    print(report.terminal(summary))
    print(protocol)
    if missing:
        print(missing)
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}"
          + ("" if missing or not records else f", {out / 'learning_curves.png'}"))
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in {out / 'logs'}); rerun to retry them")
    return {**summary, "records": records, "failed": failed, "out": out}
