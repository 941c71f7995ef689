"""Issue #27, a newcomer's first hour: baselines in every run, no traps, one item per test group."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sinkrec.api import fresh_output_dir, make_config, run_config
from sinkrec.cli import build_parser, main
from sinkrec.data.timecheck import timestamp_problems

from .test_readme_tour import write_public_style

FAST = ["--set", "train.epochs=1", "--set", "train.progress=false", "--device", "cpu"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_public_style(tmp_path / "ratings.csv")
    return tmp_path


# ---- 1. baselines in train's table, the below-pop and few-steps warnings --------------------
def test_train_prints_baselines_warns_and_records_them(workdir, capsys):
    from sinkrec.compare.worker import fit_baseline

    assert main(["train", "ratings.csv", *FAST]) == 0
    out = capsys.readouterr().out
    assert "pop test" in out and "itemknn test" in out
    metrics = json.loads((workdir / "runs" / "ratings-gdn" / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"pop", "itemknn"}
    # the same numbers `sinkrec compare` gets: one code path
    cfg = make_config({**metrics["config"], "model": {"name": "pop"}})
    assert fit_baseline(cfg, workdir / "pop")["test"] == metrics["baselines"]["pop"]["test"]
    # 50 users in batches of 128: one step an epoch, and one step leaves the model below popularity
    assert "warning: an epoch is only 1 optimiser step(s)" in out and "train.batch_size=2" in out
    assert metrics["test"]["ndcg@10"] <= metrics["baselines"]["pop"]["test"]["ndcg@10"]
    assert "is at or below popularity's" in out


def test_no_baselines_and_no_warning_with_enough_steps(workdir, capsys):
    assert main(["train", "ratings.csv", "--no-baselines", "--set", "train.batch_size=2", *FAST]) == 0
    out = capsys.readouterr().out
    assert "pop test" not in out and "optimiser step" not in out and "popularity" not in out
    without = json.loads((workdir / "runs" / "ratings-gdn" / "metrics.json").read_text())
    assert "baselines" not in without
    # fitting the baselines leaves the run itself unchanged (they must not draw from its random streams)
    assert main(["train", "ratings.csv", "--set", "train.batch_size=2", *FAST]) == 0
    with_them = json.loads((workdir / "runs" / "ratings-gdn-2" / "metrics.json").read_text())
    assert with_them["history"][0]["loss"] == without["history"][0]["loss"] and with_them["test"] == without["test"]


# ---- 2. --set data.path=FILE is `train FILE` --------------------------------------------------
def test_set_data_path_is_the_same_run_as_train_file(workdir):
    by_argument = make_config(run_config("ratings.csv", overrides=["train.epochs=1"])).to_dict()
    for key in ("data.path", "data.dataset"):
        by_override = make_config(run_config(overrides=[f"{key}=ratings.csv", "train.epochs=1"])).to_dict()
        assert by_override == by_argument
    assert by_argument["eval"]["filter_seen"] is True and by_argument["output_dir"] == "runs/ratings-gdn"
    assert main(["train", "--set", "data.path=ratings.csv", "--no-baselines", *FAST]) == 0
    metrics = json.loads((workdir / "runs" / "ratings-gdn" / "metrics.json").read_text())
    assert metrics["dataset"] == "ratings" and metrics["filter_seen"] is True
    assert not (workdir / "runs" / "synthetic").exists()


# ---- 4. evaluate from anywhere; --data for a moved file ---------------------------------------
def test_evaluate_from_another_folder_and_a_moved_file(workdir, monkeypatch, capsys):
    assert main(["train", "ratings.csv", "--no-baselines", *FAST]) == 0
    run = workdir / "runs" / "ratings-gdn"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["config"]["data"]["dataset"] == str(workdir / "ratings.csv")
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = elsewhere / "m.json"
    assert main(["evaluate", str(run), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["ndcg@10"] == pytest.approx(saved["test"]["ndcg@10"], abs=1e-6)
    (workdir / "ratings.csv").rename(elsewhere / "moved.csv")
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "ratings.csv is gone" in err and "--data PATH" in err
    assert main(["evaluate", str(run), "--data", "moved.csv", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["ndcg@10"] == pytest.approx(saved["test"]["ndcg@10"], abs=1e-6)


# ---- 5. failures leave no run folder; the "writing to -N" warning only after validation --------
def test_failed_commands_leave_no_run_folder(workdir, monkeypatch, caplog):
    (workdir / "bad.csv").write_text("user_id,item_id\nu1,a\n")
    assert main(["train", "bad.csv", *FAST]) == 2
    assert main(["train", "missing.csv", *FAST]) == 2
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())

    from sinkrec.training.trainer import Trainer

    def broken(self):
        raise ValueError("broken before the first epoch")

    monkeypatch.setattr(Trainer, "fit", broken)
    assert main(["train", "ratings.csv", "--no-baselines", *FAST]) == 2
    assert not (workdir / "runs" / "ratings-gdn").exists()


def test_numbered_folder_warning_comes_after_validation(workdir, caplog):
    assert main(["train", "ratings.csv", "--no-baselines", *FAST]) == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["train", "ratings.csv", "--set", "train.epoch=1"]) == 2  # a typo: refused first
        (workdir / "bad.csv").write_text("user_id,item_id\nu1,a\n")
        assert main(["train", "bad.csv", "--output", "runs/ratings-gdn"]) == 2
    assert "already holds a run" not in caplog.text
    assert not (workdir / "runs" / "ratings-gdn-2").exists()
    assert fresh_output_dir(workdir / "runs" / "ratings-gdn") == workdir / "runs" / "ratings-gdn-2"


# ---- 6. timestamps, --version, model names, best.yaml, install hints, compare progress ---------
def test_timestamp_problems_are_counted_in_one_line():
    offsets = np.array([0, 3, 6])
    good = np.array([1.6e9, 1.6e9 + 5, 1.6e9 + 9, 1.6e9 + 1, 1.6e9 + 2, 1.6e9 + 3])
    assert timestamp_problems(good, offsets, now=1.7e9) is None
    assert "no timestamps" in timestamp_problems(None, offsets)
    assert "all 6 are equal" in timestamp_problems(np.zeros(6), offsets)
    assert "3 of 6 are before 1990" in timestamp_problems(np.array([1, 2, 3, 1.6e9, 1.6e9 + 1, 1.6e9 + 2]),
                                                          offsets, now=1.7e9)
    late = timestamp_problems(good * 1000, offsets, now=1.7e9)
    assert "6 of 6 are in the future (milliseconds?)" in late
    tied = timestamp_problems(np.array([1.6e9, 1.6e9, 1.6e9, 1.6e9 + 1, 1.6e9 + 2, 1.6e9 + 3]), offsets, now=1.7e9)
    assert "2 of 4 consecutive events of a user share their timestamp" in tied  # not across users
    assert "\n" not in tied


def test_implausible_timestamps_are_reported_when_the_file_is_read(workdir, caplog):
    from sinkrec.api import load_dataset

    rows = ["user_id,item_id,timestamp"] + [f"u{u},{i},{i}" for u in range(5) for i in range(1, 6)]
    (workdir / "ordinal.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        data = load_dataset("ordinal.csv")
    assert any("25 of 25 are before 1990" in note for note in data.store.notes)
    assert "before 1990" in caplog.text


def test_version_and_case_insensitive_model_names(capsys):
    import sinkrec

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"sinkrec {sinkrec.__version__}"
    assert make_config(run_config("x.csv", "GDN")).model["name"] == "gdn"
    assert make_config(run_config("x.csv", overrides=["model.name=SASRec"])).model["name"] == "sasrec"
    assert main(["config", "show", "GDN"]) == 0 and "model: gdn" in capsys.readouterr().out


def test_compare_accepts_model_names_in_any_case_and_shows_epochs(workdir, capsys):
    assert main(["compare", "ratings.csv", "--models", "POP,GDN", "--seeds", "1", "--budget", "epochs:2",
                 "--set", "train.device=cpu", "--out", "cmp"]) == 0
    out = capsys.readouterr().out
    assert "gdn-s0: epoch   1" in out and "gdn-s0: epoch   2" in out
    assert "gdn-s0: WARNING an epoch is only" in out  # 50 users, batch 128: the worker's warning reaches the console
    assert json.loads((workdir / "cmp" / "compare.json").read_text())["complete"] is True


def test_log_tail_shows_only_new_epoch_lines(tmp_path):
    from sinkrec.compare import LogTail

    log = tmp_path / "logs" / "gdn-s0.log"
    log.parent.mkdir()
    log.write_text("10:00:00 INFO epoch   1  loss 1.0  old run\n")
    tail = LogTail(tmp_path)
    assert tail.lines("gdn-s0") == []  # what an earlier run wrote is not shown again
    with open(log, "a") as handle:
        handle.write("10:00:01 INFO data x: 3 users\n10:00:01 WARNING an epoch is only 1 optimiser step(s)\n"
                     "10:00:02 INFO epoch   2  loss 0.9\n10:00:03 INFO epo")
    assert tail.lines("gdn-s0") == ["WARNING an epoch is only 1 optimiser step(s)", "epoch   2  loss 0.9"]
    with open(log, "a") as handle:
        handle.write("ch   3  loss 0.8\n10:00:04 WARNING an epoch is only 1 optimiser step(s)\n")
    assert tail.lines("gdn-s0") == ["epoch   3  loss 0.8"]  # a warning already shown is not repeated


def test_best_yaml_rerun_line_works_from_any_folder(workdir, monkeypatch):
    pytest.importorskip("optuna")
    from sinkrec.tune import tune

    (workdir / "space.yaml").write_text("train.lr: {type: categorical, choices: [0.01]}\n")
    tune("ratings.csv", "gdn", trials=1, space=workdir / "space.yaml", budget="epochs:1", out="study",
         overrides=["train.device=cpu", "model.d_model=16"])
    header = (workdir / "study" / "best.yaml").read_text().splitlines()[1]
    command = header.removeprefix("# Rerun: ").split()
    assert command[:3] == ["sinkrec", "train", "--config"] and Path(command[3]).is_absolute()
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main([*command[1:], "--no-baselines", "--set", "train.progress=false"]) == 0


def test_install_hints_are_the_same_in_readme_and_docs():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    setup = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(setup) == 2 and all(line.startswith("python3 -m venv") for line in setup)
    docs = (root / "docs" / "getting-started.md").read_text()
    for line in setup:
        assert line in docs
    assert "pip install torch " not in docs and "pip install torch\n" not in docs  # no second, different hint

