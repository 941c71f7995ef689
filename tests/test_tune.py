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
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # every trial once, none duplicated
    assert len({t.user_attrs["run"] for t in trials}) == 4
    assert all(t.state.name == "COMPLETE" for t in trials)
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
