"""`sinkrec tune`: shared SQLite study across worker processes, pruning, and a reproducible best config."""

import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

from sinkrec.api import train  # noqa: E402
from sinkrec.errors import ConfigError  # noqa: E402
from sinkrec.tune import load_space, tune  # noqa: E402

TINY = ["data.synthetic.n_users=60", "data.synthetic.n_items=80", "data.synthetic.n_clusters=4",
        "data.synthetic.min_len=10", "data.synthetic.max_len=30", "data.max_len=30", "model.d_model=16",
        "train.batch_size=32", "train.device=cpu"]
SPACE = "train.lr: {type: categorical, choices: [0.01, 0.00001]}\nmodel.dropout: {type: float, low: 0.0, high: 0.3}\n"


def test_shipped_spaces_load():
    for model in ("sasrec", "gdn", "sinkrec", "sessa"):
        assert load_space(model)


def test_counting_baselines_are_not_tuned(tmp_path):
    with pytest.raises(ConfigError, match="nothing to tune"):
        tune(None, "itemknn", out=tmp_path)


def test_two_workers_share_one_sqlite_study(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "sinkrec.cli", "tune", "--model", "sasrec", "--trials", "4", "--workers", "2",
           "--budget", "epochs:1", "--space", str(tmp_path / "space.yaml"), "--out", str(out)]
    for text in TINY:
        cmd += ["--set", text]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = optuna.load_study(study_name="sasrec-synthetic", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    detail = [(t.number, t.state.name, t.user_attrs.get("error")) for t in trials]
    assert len(complete) == 4, detail  # the total, shared by both workers
    assert all(t.state.name == "FAIL" and t.user_attrs.get("error") for t in trials if t not in complete), detail
    assert len({t.user_attrs["run"] for t in complete}) == 4 and len(set(_settings(trials))) == len(trials)
    assert (out / "best.yaml").is_file() and "| 3 |" in (out / "trials.md").read_text()


def test_pruned_trial_is_marked_and_best_config_reproduces(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    result = tune(None, "sasrec", trials=5, space=tmp_path / "space.yaml", budget="epochs:3", out=tmp_path / "t",
                  overrides=TINY, seed=1, pruner_startup=1)
    states = [row["state"] for row in result["trials"]]
    assert "pruned" in states, result["trials"]
    assert "| pruned |" in (tmp_path / "t" / "trials.md").read_text()
    rerun = train(str(tmp_path / "t" / "best.yaml"), output_dir=tmp_path / "retrain")
    assert rerun.valid["ndcg@10"] == pytest.approx(result["best_value"], abs=1e-9)
    assert result["test"]["ndcg@10"] == pytest.approx(rerun.test["ndcg@10"], abs=1e-9)


def _tune_cmd(out, space, trials, budget="epochs:1"):
    cmd = [sys.executable, "-m", "sinkrec.cli", "tune", "--model", "sasrec", "--trials", str(trials),
           "--budget", budget, "--space", str(space), "--out", str(out), "--pruner", "none"]
    for text in TINY:
        cmd += ["--set", text]
    return cmd


def _trials(out):
    return optuna.load_study(study_name="sasrec-synthetic", storage=f"sqlite:///{out / 'study.db'}").get_trials()


def _settings(trials):
    return [tuple(sorted(t.params.items())) for t in trials]


def test_rerun_continues_to_the_total_and_never_redraws_settings(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    first = tune(None, "sasrec", trials=2, space=tmp_path / "space.yaml", budget="epochs:1", out=tmp_path / "t",
                 overrides=TINY, pruner="none")
    assert first["counts"]["complete"] == 2
    again = tune(None, "sasrec", trials=4, space=tmp_path / "space.yaml", budget="epochs:1", out=tmp_path / "t",
                 overrides=TINY, pruner="none")  # same seed: a fresh sampler would redraw trials 0 and 1
    trials = _trials(tmp_path / "t")
    assert again["counts"] == {"complete": 4, "pruned": 0, "fail": 0, "running": 0}
    assert len(set(_settings(trials))) == 4
    assert tune(None, "sasrec", trials=4, space=tmp_path / "space.yaml", budget="epochs:1", out=tmp_path / "t",
                overrides=TINY, pruner="none")["counts"]["complete"] == 4  # already at its total: runs nothing


def test_duplicate_settings_fail_without_counting(tmp_path):
    (tmp_path / "space.yaml").write_text("train.lr: {type: categorical, choices: [0.01, 0.001]}\n")
    tune(None, "sasrec", trials=3, space=tmp_path / "space.yaml", budget="epochs:1", out=tmp_path / "t",
         overrides=TINY, pruner="none")
    trials = _trials(tmp_path / "t")
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["train.lr"] for t in finished) == [0.001, 0.01]  # only two settings exist
    duplicates = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert duplicates and all(t.state.name == "FAIL" for t in duplicates)


def _kill_after_two_epochs(cmd, storage):
    """Start `cmd`, SIGKILL it once a trial has reported two epochs; that trial's number."""
    import os
    import signal
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.monotonic() + 240, None
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            running = [t for t in optuna.load_study(study_name="sasrec-synthetic", storage=storage).get_trials()
                       if t.state.name == "RUNNING" and len(t.intermediate_values) >= 2]
        except Exception:  # the study is not created yet
            continue
        if running:
            os.kill(proc.pid, signal.SIGKILL)
            killed = running[0].number
            break
    proc.wait()
    assert killed is not None, "the study finished or never reported an epoch before the kill"
    return killed


def test_killed_trial_fails_and_is_continued_exactly_from_its_last_epoch(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "study"
    storage = f"sqlite:///{out / 'study.db'}"
    cmd = _tune_cmd(out, tmp_path / "space.yaml", trials=2, budget="epochs:30")
    killed = _kill_after_two_epochs(cmd, storage)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "marked failed" in result.stderr and "continuing killed trial" in result.stderr
    trials = optuna.load_study(study_name="sasrec-synthetic", storage=storage).get_trials()
    assert trials[killed].state.name == "FAIL" and "error" not in trials[killed].user_attrs
    after = [t for t in trials if t.user_attrs.get("resume_of") == killed]
    assert len(after) == 1 and after[0].state.name == "COMPLETE" and after[0].params == trials[killed].params
    done = trials[killed].intermediate_values
    assert len(done) >= 2 and sorted(after[0].intermediate_values) == list(range(1, 31))
    assert {e: after[0].intermediate_values[e] for e in done} == done  # the epochs it had are reported again
    fresh = [t for t in trials if t.number != killed and "resume_of" not in t.user_attrs]
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2 and len(set(_settings(fresh + [after[0]]))) == 2
    # exact: the continued trial scores what the same settings score trained without a kill
    rerun = train(after[0].user_attrs["config"] | {"output_dir": str(tmp_path / "uninterrupted")})
    assert rerun.valid["ndcg@10"] == pytest.approx(after[0].value, abs=1e-9)


def test_only_killed_trials_with_a_committed_epoch_are_continued_once(tmp_path):
    from sinkrec.tune.loop import continue_killed_trials

    train(None, model="sasrec", overrides=TINY + ["train.epochs=1"], output_dir=tmp_path / "run", baselines=False)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    numbers = {}
    run, fault = str(tmp_path / "run"), "AcceleratorError: CUDA error: an illegal memory access was encountered"
    for name, attrs in (("killed", {"run": run}), ("raised", {"run": run, "error": "NonFiniteError: diverged"}),
                        ("no epoch", {"run": str(tmp_path / "empty")}),
                        ("device fault", {"run": run, "device_error": fault}),
                        ("faulted again", {"run": run, "device_error": fault, "resume_of": 1})):
        trial = study.ask(space)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        numbers[name] = trial.number
    assert continue_killed_trials(study, tmp_path) == [numbers["killed"], numbers["device fault"]]
    assert continue_killed_trials(study, tmp_path) == []  # queued once
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["resume_of"] for t in waiting] == [numbers["killed"], numbers["device fault"]]
    assert waiting[0].system_attrs["fixed_params"] == study.trials[numbers["killed"]].params  # params once it runs


def test_a_device_fault_stops_the_worker_and_blames_not_the_settings(tmp_path):
    """A lost CUDA context fails every later trial of the process at once (seen under MPS: hundreds of
    0-second trials): the worker records the one trial as a device fault and stops."""
    from sinkrec.tune.loop import device_fault, run_trials

    class AcceleratorError(RuntimeError):  # torch.AcceleratorError as a CPU test can raise it
        pass

    calls = []

    def objective(trial):
        calls.append(trial.number)
        trial.suggest_float("x", 0, 1)
        raise AcceleratorError("CUDA error: an illegal memory access was encountered")

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    assert run_trials(study, objective, total=5, out=tmp_path) == 1 and calls == [0]
    attrs = study.trials[0].user_attrs
    assert study.trials[0].state.name == "FAIL" and "error" not in attrs
    assert attrs["device_error"].startswith("AcceleratorError: CUDA error: an illegal memory access")
    assert device_fault(RuntimeError("CUDA error: CUBLAS_STATUS_INTERNAL_ERROR when calling `cublasGemmEx`"))
    assert not device_fault(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))  # the settings' doing


def test_study_state_travels_as_json_and_resumes_without_repeats(tmp_path):
    from sinkrec.tune.transfer import export_trials, import_trials

    (tmp_path / "space.yaml").write_text(SPACE)
    tune(None, "sasrec", trials=2, space=tmp_path / "space.yaml", budget="epochs:2", out=tmp_path / "a",
         overrides=TINY, pruner="none")
    rows = export_trials(optuna.load_study(study_name="sasrec-synthetic", storage=f"sqlite:///{tmp_path}/a/study.db"))
    moved = optuna.create_study(study_name="sasrec-synthetic", storage=f"sqlite:///{tmp_path}/b.db",
                                direction="maximize")
    assert import_trials(moved, rows) == 2
    assert export_trials(moved) == rows
    tune(None, "sasrec", trials=3, space=tmp_path / "space.yaml", budget="epochs:2", out=tmp_path / "b",
         storage=f"sqlite:///{tmp_path}/b.db", overrides=TINY, pruner="none")
    trials = moved.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and len(set(_settings(trials))) == 3
    assert [t.intermediate_values for t in trials[:2]] == [
        {int(k): v for k, v in r["intermediate"].items()} for r in rows]


def test_only_this_hosts_dead_trials_are_failed(tmp_path):
    import socket

    from sinkrec.tune.loop import fail_dead_trials

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    elsewhere, mine, unclaimed = study.ask(), study.ask(), study.ask()
    elsewhere.set_user_attr("host", "another-machine")  # its folder is on that machine: the heartbeat decides
    mine.set_user_attr("host", socket.gethostname())  # no process here holds its folder: its worker is gone
    assert fail_dead_trials(study, tmp_path) == [mine.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {elsewhere.number: "RUNNING", mine.number: "FAIL", unclaimed.number: "RUNNING"}


def test_exported_trials_of_every_state_import_unchanged():
    """A pruned trial keeps its last reported value through export and import (it used to come back None)."""
    import datetime

    from sinkrec.tune.transfer import export_trials, import_trials

    study = optuna.create_study(direction="maximize")
    x = optuna.distributions.FloatDistribution(0.0, 1.0)
    start = datetime.datetime(2026, 12, 4, 12, 0)
    for number, (state, value) in enumerate([("COMPLETE", 0.4), ("PRUNED", 0.2), ("FAIL", None)]):
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=optuna.trial.TrialState[state], value=value,
            datetime_start=start, datetime_complete=start + datetime.timedelta(seconds=number + 1),
            params={"x": number / 4}, distributions={"x": x}, user_attrs={"n": number}, system_attrs={},
            intermediate_values={0: 0.1, 1: 0.2}))
    rows = export_trials(study)
    assert [r["value"] for r in rows] == [0.4, 0.2, None]
    moved = optuna.create_study(direction="maximize")
    import_trials(moved, rows)
    assert export_trials(moved) == rows
