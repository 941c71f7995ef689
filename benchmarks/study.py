"""The pre-registered tuned study: SASRec, GDN and SinkRec, each tuned with one budget per dataset.

Plan (fixed before any result): every (dataset, model) pair is a `sinkrec tune` study of TRIALS
trials over the shipped search space of the model (learning rate, dropout, weight decay and the
model's own keys; width fixed at 64), each trial trained for the dataset's epoch budget with a cosine
schedule, median-pruned on validation NDCG@10; then the best trial's config is trained with SEEDS
seeds and scored once on test. The same dataset settings hold for every model.

The study spans sessions. Its state is JSON under benchmarks/results/study-tuned/ (one file per
study: its trials and seed runs), committed after each session; `run` rebuilds SQLite studies from
it, keeps up to --parallel processes busy on one GPU until --minutes pass, and writes the state back.
A process still running at the deadline is stopped and its trial recorded as failed; with --keep its
run folder is kept (up to --keep-mb), and a later stretch given it as --restore continues that
trial from its last epoch (exact resume) rather than training those settings again.

    python benchmarks/study.py plan
    python benchmarks/study.py run --minutes 9 --parallel 14 --device cuda --out DIR [--keep K --restore R]
    python benchmarks/study.py report     # results JSON + table; tuned configs of finished studies
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "benchmarks" / "results" / "study-tuned"
TUNED = ROOT / "sinkrec" / "configs" / "tuned"
MODELS = ("sasrec", "gdn", "sinkrec")
TRIALS = 20
SEEDS = (0, 1, 2)
WORKERS_PER_STUDY = 3
FILL_FRACTION = 0.5  # a stale estimate can be twice a trial (ML-1M-ts-half GDN: 93-146 s before MPS, 36-84 s with it)
# one CPU thread per child: 14 processes each starting a thread per core fought over 16 cores
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
COMMON = ["train.schedule=cosine", "train.warmup_steps=100", "model.d_model=64"]
# key: (catalogue name, overrides, epoch budget, seconds a trial takes at first guess on an H200 shared by 14)
DATASETS = {
    "ml-100k": ("ml-100k", ["data.max_len=200", "train.batch_size=32"], 40, 60),
    "lastfm": ("lastfm", ["data.max_len=200", "train.batch_size=32"], 40, 60),
    "beauty": ("beauty", ["data.max_len=50", "train.batch_size=128"], 30, 450),
    "ml-1m-ts-half": ("ml-1m-ts-half", ["data.max_len=200", "train.batch_size=64"], 30, 200),
    "ml-1m": ("ml-1m-sasrec", ["data.max_len=200", "train.batch_size=128"], 30, 300),
    "ml-1m-1024": ("ml-1m-sasrec", ["data.max_len=1024", "train.batch_size=64"], 30, 500),
}


@dataclass
class Study:
    dataset: str
    model: str
    trials: list = field(default_factory=list)
    seeds: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}"

    @property
    def settings(self) -> tuple[str, list[str], int]:
        catalogue, overrides, epochs, _ = DATASETS[self.dataset]
        return catalogue, COMMON + overrides, epochs

    def finished(self) -> list[dict]:
        return [t for t in self.trials if t["state"] in ("COMPLETE", "PRUNED")]

    def best(self) -> dict | None:
        complete = [t for t in self.trials if t["state"] == "COMPLETE"]
        return max(complete, key=lambda t: t["value"]) if complete else None

    def trial_seconds(self) -> float:
        """Median of its complete trials; else the longest of its stopped trials, scaled to the full budget."""
        seconds = [t["seconds"] for t in self.trials if t["state"] == "COMPLETE" and t.get("seconds")]
        if seconds:
            return statistics.median(seconds)
        epochs = self.settings[2]
        stopped = [t["seconds"] * epochs / len(t["intermediate"]) for t in self.trials
                   if t["state"] == "FAIL" and t.get("seconds") and t["intermediate"]]
        return max([float(DATASETS[self.dataset][3]), *stopped])

    def stopped(self) -> list[dict]:
        """Trials killed at a deadline or stopped by a device fault (`continuable`) that no trial has
        continued yet."""
        from sinkrec.tune.loop import continuable

        continued = {t["user_attrs"].get("resume_of") for t in self.trials}
        return [t for t in self.trials if t["state"] == "FAIL" and t["number"] not in continued and t.get("params")
                and continuable(t["user_attrs"]) and t["user_attrs"].get("run")]

    def state(self) -> dict:
        catalogue, overrides, epochs = self.settings
        return {"study": self.name, "dataset": self.dataset, "catalogue": catalogue, "model": self.model,
                "overrides": overrides, "epochs": epochs, "trials_planned": TRIALS, "seeds_planned": list(SEEDS),
                "trials": self.trials, "seeds": self.seeds}


def load_studies(state: Path) -> list[Study]:
    studies = []
    for dataset in DATASETS:
        for model in MODELS:
            study = Study(dataset, model)
            path = state / f"{study.name}.json"
            if path.is_file():
                saved = json.loads(path.read_text())
                study.trials, study.seeds = saved["trials"], saved["seeds"]
            studies.append(study)
    return studies


def save(study: Study, state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    path = state / f"{study.name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(study.state(), indent=1))
    os.replace(tmp, path)


def committed(folder: Path) -> tuple[int, list[Path]]:
    """The epoch a trial's run folder has committed and the files its manifest names ((0, []) before any)."""
    from sinkrec.errors import CheckpointError
    from sinkrec.training.runfolder import MANIFEST, read_manifest

    try:
        manifest = read_manifest(folder) if folder.is_dir() else None
    except CheckpointError:
        manifest = None
    if manifest is None:
        return 0, []
    files = manifest["checkpoint"]
    names = {MANIFEST, files["model"], files["best_model"], files["state"]}
    return int(files["epoch"]), sorted(folder / n for n in names if (folder / n).is_file())


def keep_stopped(studies: list[Study], keep: Path, megabytes: float) -> list[str]:
    """Copy the run folders of trials stopped at the deadline (the files their manifest names) into
    `keep`, most epochs first, up to `megabytes`: the next stretch continues them (sinkrec tune
    continues a killed trial from its last epoch) instead of training them again from the start."""
    import shutil

    candidates = []
    for study in studies:
        for trial in study.stopped():
            folder = Path(trial["user_attrs"]["run"])
            epoch, files = committed(folder)
            if epoch:
                candidates.append((epoch / study.settings[2], epoch, study, folder, files))
    kept, used = [], 0.0
    for _, epoch, study, folder, files in sorted(candidates, key=lambda c: -c[0]):
        size = sum(f.stat().st_size for f in files) / 2**20
        if used + size > megabytes:
            continue
        target = keep / study.name / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, target / f.name)
        used += size
        kept.append(f"{study.name}/{folder.name} (epoch {epoch}, {size:.1f} MB)")
    return kept


def restore_stopped(studies: list[Study], keep: Path) -> list[str]:
    """Put kept run folders back where their trials ran (the path each trial recorded)."""
    import shutil

    restored = []
    for study in studies:
        for trial in study.stopped():
            folder = Path(trial["user_attrs"]["run"])
            source = keep / study.name / folder.name
            if source.is_dir() and not folder.exists():
                shutil.copytree(source, folder)
                restored.append(f"{study.name}/{folder.name}")
    return restored


def pending_fraction(study: Study) -> float | None:
    """The share of a trial still to run for the next of this study's continuations (None: none pending)."""
    epochs = [committed(Path(t["user_attrs"]["run"]))[0] for t in study.stopped()]
    epochs = [e for e in epochs if e]  # continued in trial order: the first one is next
    return 1 - epochs[0] / study.settings[2] if epochs else None


# ---------------------------------------------------------------------------------------- running


class Job:
    """One child process: a tune worker of a study, or one seed of its best config."""

    def __init__(self, study: Study, kind: str, cmd: list[str], log: Path, seed: int | None = None):
        self.study, self.kind, self.seed, self.started = study, kind, seed, time.monotonic()
        self.folder = log.parent
        self.proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True, env=CHILD_ENV)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def storage(work: Path, study: Study) -> str:
    return f"sqlite:///{work / study.name / 'study.db'}"


def prepare_study(work: Path, study: Study) -> None:
    """A fresh SQLite study holding the committed trials (the previous machine's files are gone)."""
    import optuna

    from sinkrec.tune.transfer import import_trials

    (work / study.name).mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    created = optuna.create_study(storage=storage(work, study), study_name=study.name, direction="maximize",
                                  load_if_exists=True)
    if not created.get_trials(deepcopy=False):
        import_trials(created, study.trials)


def refresh(work: Path, study: Study) -> None:
    import optuna

    from sinkrec.tune.transfer import export_trials

    study.trials = export_trials(optuna.load_study(study_name=study.name, storage=storage(work, study)))


def tune_cmd(study: Study, work: Path, device: str, timeout: float, worker: int) -> list[str]:
    catalogue, overrides, epochs = study.settings
    cmd = [sys.executable, "-m", "sinkrec.cli", "tune", catalogue, "--model", study.model, "--trials", str(TRIALS),
           "--budget", f"epochs:{epochs}", "--storage", storage(work, study), "--study", study.name,
           "--out", str(work / study.name), "--join", "--device", device, "--timeout", str(int(timeout)),
           "--worker", str(worker), "--seed", "0"]
    return cmd + [a for o in overrides for a in ("--set", o)]


def seed_cmd(study: Study, work: Path, device: str, seed: int) -> list[str]:
    import yaml

    config = dict(study.best()["user_attrs"]["config"])
    config["output_dir"] = str(work / study.name / f"seed-{seed}")
    config["train"] = dict(config["train"], seed=seed, progress=False)
    path = work / study.name / f"best-seed-{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return [sys.executable, "-m", "sinkrec.cli", "train", "--config", str(path), "--device", device, "--overwrite",
            "--no-baselines"]  # the same for every seed: fitted once per dataset is enough, not per run


def seed_record(study: Study, work: Path, seed: int) -> dict | None:
    try:
        metrics = json.loads((work / study.name / f"seed-{seed}" / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not metrics.get("test"):
        return None
    return {"seed": seed, "trial": study.best()["number"], "valid": metrics["valid"], "test": metrics["test"],
            "best_epoch": metrics.get("best_epoch"), "epochs": len(metrics.get("history", [])),
            "train_seconds": metrics.get("train_seconds")}


def next_job(studies: list[Study], jobs: list[Job], work: Path, device: str, remaining: float,
             fill: bool = False) -> Job | None:
    """The cheapest useful job that fits in the time left: seeds of finished studies first, then trials.
    With `fill`, an idle slot takes one more trial that may not finish (its estimate can be stale: it
    was measured while the GPU was shared differently) when FILL_FRACTION of the estimate is left; so
    does a study with no complete trial yet (its estimate is a guess). Stopped at the deadline, such a
    trial is redone later."""
    for study in studies:
        active = [j for j in jobs if j.study is study]
        if len(study.finished()) >= TRIALS and not any(j.kind == "tune" for j in active) and study.best():
            running = {j.seed for j in active}
            done = {s["seed"] for s in study.seeds}
            for seed in SEEDS:
                if seed not in done and seed not in running and study.trial_seconds() * 1.2 < remaining:
                    log = work / study.name / f"seed-{seed}.log"
                    return Job(study, "seed", seed_cmd(study, work, device, seed), log, seed)
    for study in sorted(studies, key=lambda s: pending_fraction(s) is None):  # continuations first
        active = [j for j in jobs if j.study is study and j.kind == "tune"]
        running_trials = sum(t["state"] == "RUNNING" for t in study.trials)
        if len(study.finished()) + max(len(active), running_trials) >= TRIALS or len(active) >= WORKERS_PER_STUDY:
            continue
        estimate = study.trial_seconds() * 1.2 * (pending_fraction(study) or 1.0)
        unknown = not any(t["state"] == "COMPLETE" for t in study.trials)  # only stopped trials to go by
        if estimate < remaining or ((fill or unknown) and estimate * FILL_FRACTION < remaining):
            worker = len(active)
            log = work / study.name / f"worker-{worker}-{int(time.time())}.log"  # --timeout 1: one trial only
            return Job(study, "tune", tune_cmd(study, work, device, max(1.0, remaining - estimate), worker), log)
    return None


def run(args: argparse.Namespace) -> int:
    state, work = Path(args.state), Path(args.work)
    studies = [s for s in load_studies(state) if not args.only or s.dataset in args.only.split(",")]
    for study in studies:
        prepare_study(work, study)
    if args.restore and Path(args.restore).is_dir():
        print("restored stopped trials:", ", ".join(restore_stopped(studies, Path(args.restore))) or "none")
    before = {s.name: (len(s.finished()), len(s.seeds)) for s in studies}
    deadline = time.monotonic() + args.minutes * 60
    jobs: list[Job] = []
    print(f"{len(studies)} studies, up to {args.parallel} processes, {args.minutes} minutes", flush=True)
    while True:
        remaining = deadline - time.monotonic()
        for job in [j for j in jobs if j.proc.poll() is not None]:
            jobs.remove(job)
            refresh(work, job.study)
            if job.kind == "seed":
                record = seed_record(job.study, work, job.seed)
                if record:
                    job.study.seeds.append(record)
            print(f"[{args.minutes * 60 - remaining:6.0f}s] {job.study.name} {job.kind}"
                  f"{'' if job.seed is None else f' {job.seed}'} exited {job.proc.returncode}: "
                  f"{len(job.study.finished())}/{TRIALS} trials, {len(job.study.seeds)}/{len(SEEDS)} seeds",
                  flush=True)
            save(job.study, Path(args.out))
        if remaining <= 0:
            break
        while len(jobs) < args.parallel:
            job = next_job(studies, jobs, work, args.device, remaining)
            if job is None and args.fill:
                job = next_job(studies, jobs, work, args.device, remaining, fill=True)
            if job is None:
                break
            jobs.append(job)
            print(f"[{args.minutes * 60 - remaining:6.0f}s] start {job.study.name} {job.kind}"
                  f"{'' if job.seed is None else f' {job.seed}'}", flush=True)
        if not jobs:
            break
        time.sleep(2)
    for job in jobs:  # past the deadline: their trials fail; with --keep, the next stretch continues them
        job.stop()
    for study in studies:
        refresh(work, study)
        save(study, Path(args.out))
    log_session(Path(args.out), args, studies, before)
    if args.keep:
        print("kept stopped trials:", ", ".join(keep_stopped(studies, Path(args.keep), args.keep_mb)) or "none")
    print(table(studies))
    return 0


def log_session(out: Path, args: argparse.Namespace, studies: list[Study], before: dict[str, tuple[int, int]]) -> None:
    """sessions.json: when, where and at which commit each stretch of the study ran, and what it added."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import machine

    path = Path(args.state) / "sessions.json"
    sessions = json.loads(path.read_text()) if path.is_file() else []
    sessions.append({"date": datetime.date.today().isoformat(), "machine": machine(), "git": args.git,
                     "mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")),  # processes shared the GPU at once
                     "command": "python benchmarks/study.py " + shlex.join(sys.argv[1:]),
                     "added": {s.name: [len(s.finished()) - before[s.name][0], len(s.seeds) - before[s.name][1]]
                               for s in studies if (len(s.finished()), len(s.seeds)) != before[s.name]}})
    (out / "sessions.json").write_text(json.dumps(sessions, indent=1))


# ---------------------------------------------------------------------------------------- reporting


def table(studies: list[Study]) -> str:
    from sinkrec.tune.loop import DEVICE_FAULTS

    lines = ["| study | trials done | failed (of them device faults) | best valid NDCG@10 | seeds | "
             "test NDCG@10 (mean ± std) |", "|---|---|---|---|---|---|"]
    for s in studies:
        best = s.best()
        tests = [r["test"]["ndcg@10"] for r in s.seeds]
        fails = [t["user_attrs"] for t in s.trials if t["state"] == "FAIL"]
        faults = sum("device_error" in a or any(f in a.get("error", "") for f in DEVICE_FAULTS) for a in fails)
        failed = f"{len(fails)} ({faults})"
        best_text = f"{best['value']:.4f} (trial {best['number']})" if best else "–"
        test_text = f"{statistics.mean(tests):.4f} ± {statistics.stdev(tests) if len(tests) > 1 else 0:.4f}" \
            if tests else "–"
        lines.append(f"| {s.name} | {len(s.finished())}/{TRIALS} | {failed} | {best_text} | "
                     f"{len(s.seeds)}/{len(SEEDS)} | {test_text} |")
    return "\n".join(lines)


def tuned_config(study: Study, sessions: list[dict]) -> str:
    import yaml

    best = study.best()
    config = dict(best["user_attrs"]["config"])
    config["output_dir"] = f"runs/tuned-{study.name}"
    config["train"] = {k: v for k, v in config["train"].items() if k not in ("progress", "device")}
    tests = [r["test"]["ndcg@10"] for r in study.seeds]
    valid = [r["valid"]["ndcg@10"] for r in study.seeds]
    header = [f"# {study.model} on {study.dataset}, tuned by the pre-registered study (benchmarks/study.py).",
              f"# Best of {len(study.finished())} trials "
              f"(trial {best['number']}, valid NDCG@10 {best['value']:.4f}).",
              f"# {len(tests)} seeds: valid NDCG@10 {statistics.mean(valid):.4f}, test NDCG@10 "
              f"{statistics.mean(tests):.4f} ± {statistics.stdev(tests) if len(tests) > 1 else 0:.4f}.",
              *[f"# Ran: {s['command']} ({s['date']}, {s['git']})" for s in sessions if study.name in s["added"]],
              f"# Then: python benchmarks/study.py report. Rerun: sinkrec train --config tuned/{study.name}"]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False)


def report(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import write_results

    studies = load_studies(Path(args.state))
    sessions_path = Path(args.state) / "sessions.json"
    sessions = json.loads(sessions_path.read_text()) if sessions_path.is_file() else []
    records = []
    for s in studies:
        for run_ in s.seeds:
            for split in ("valid", "test"):
                records.append({"dataset": s.dataset, "model": s.model, "variant": "tuned", "seed": run_["seed"],
                                "split": split, "metrics": run_[split], "epochs": run_["epochs"],
                                "train_seconds": run_["train_seconds"], "best_epoch": run_["best_epoch"],
                                "trial": run_["trial"]})
        if len(s.seeds) == len(SEEDS):
            TUNED.mkdir(parents=True, exist_ok=True)
            (TUNED / f"{s.name}.yaml").write_text(tuned_config(s, sessions))
    write_results("study-tuned", records, host="; ".join(sorted({s["machine"] for s in sessions})),
                  extra={"sessions": sessions, "progress": {s.name: {"trials": len(s.finished()),
                                                                      "seeds": len(s.seeds)} for s in studies}})
    print(table(studies))
    return 0


def plan(args: argparse.Namespace) -> int:
    if args.files_to_go:  # the data files of the studies still to finish (study_device.sh copies only these)
        from sinkrec.data.catalog import lookup

        for study in load_studies(Path(args.state)):
            if len(study.finished()) < TRIALS or len(study.seeds) < len(SEEDS):
                info = lookup(study.settings[0])
                print("\n".join((info.filename, *info.local_names)))
        return 0
    print(f"{len(DATASETS)} datasets × {len(MODELS)} models, {TRIALS} trials each, then seeds {list(SEEDS)}")
    for key, (catalogue, overrides, epochs, _) in DATASETS.items():
        print(f"  {key:<14} {catalogue:<14} epochs {epochs:<3} {' '.join(COMMON + overrides)}")
    print("search spaces: sinkrec/tune/spaces/{" + ",".join(MODELS) + "}.yaml")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="print the pre-registered plan")
    p.add_argument("--files-to-go", action="store_true", help="only the data files that unfinished studies read")
    p.add_argument("--state", default=str(STATE), help="folder of the committed study state")
    p.set_defaults(func=plan)
    p = sub.add_parser("run", help="continue the study for a while on this machine")
    p.add_argument("--minutes", type=float, default=9.0, help="stop every process after this long")
    p.add_argument("--parallel", type=int, default=12, help="processes at a time (they share the GPU)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--only", help="comma-separated dataset keys (default: all, cheapest first)")
    p.add_argument("--state", default=str(STATE), help="folder of the committed study state (read)")
    p.add_argument("--out", default=str(STATE), help="folder the updated state is written to")
    p.add_argument("--work", default="/tmp/sinkrec-study", help="SQLite studies and run folders")
    p.add_argument("--git", default="", help="commit of the code that ran (where the tree travelled without .git)")
    p.add_argument("--fill", action=argparse.BooleanOptionalAction, default=True,
                   help="start a trial that may not finish rather than leave a slot idle")
    p.add_argument("--keep", help="copy run folders of trials stopped at the deadline here (to continue them)")
    p.add_argument("--keep-mb", type=float, default=36.0, help="at most this many MB of them (most epochs first)")
    p.add_argument("--restore", help="folder an earlier --keep filled: its trials continue where they stopped")
    p.set_defaults(func=run)
    p = sub.add_parser("report", help="results JSON, table, and tuned configs of studies with every seed")
    p.add_argument("--state", default=str(STATE))
    p.set_defaults(func=report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "files_to_go", False):  # that one's output is read by study_device.sh
        print("$ python benchmarks/study.py " + shlex.join(argv if argv is not None else sys.argv[1:]), flush=True)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
