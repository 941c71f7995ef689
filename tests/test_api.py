"""The public API: how a run's config is built, and what `import sinkrec` costs and exposes."""

import subprocess
import sys
from pathlib import Path

import pytest

import sinkrec
from sinkrec.api import DEMO_RUN, fresh_output_dir, run_config
from sinkrec.errors import ConfigError


def test_import_is_light_and_exposes_the_api():
    code = "import sys, sinkrec; print(sorted(m for m in ('torch', 'numpy', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # nothing heavy until the API is used
    for name in ("load_dataset", "train", "evaluate", "Recommender", "Session", "Run", "make_config"):
        assert name in dir(sinkrec)


def test_api_names_survive_importing_the_training_package():
    import sinkrec.training.trainer  # noqa: F401 - a submodule must not shadow sinkrec.train

    assert callable(sinkrec.train) and sinkrec.train.__module__ == "sinkrec.api"


def test_demo_settings_apply_only_to_the_builtin_data():
    demo = sinkrec.make_config(run_config())
    assert demo.data.dataset == "synthetic" and demo.model["name"] == DEMO_RUN["model"]["name"]
    assert demo.eval.filter_seen is False and demo.output_dir == "runs/synthetic"
    own = sinkrec.make_config(run_config(data="logs/ratings.csv"))
    assert own.data.dataset == "logs/ratings.csv" and own.model["name"] == "gdn"
    assert own.eval.filter_seen is True and own.data.min_events == 3  # the documented protocol
    assert own.output_dir == str(Path("runs") / "ratings-gdn")


def test_shipped_config_by_name_with_data_and_model_overrides():
    shipped = sinkrec.make_config(run_config(config="ml-1m-gdn"))
    assert shipped.data.dataset == "ml-1m-sasrec" and shipped.data.path is None
    mine = sinkrec.make_config(run_config("mine.txt", "sasrec", "ml-1m-gdn", ["train.lr=3e-4"], "cpu", "out"))
    assert (mine.data.dataset, mine.model["name"], mine.train.lr) == ("mine.txt", "sasrec", 3e-4)
    assert (mine.train.device, mine.output_dir, mine.data.max_len) == ("cpu", "out", shipped.data.max_len)


def test_unknown_config_name_suggests_a_shipped_one():
    with pytest.raises(ConfigError, match="did you mean 'ml-1m-gdn'"):
        run_config(config="ml-1m-gnd")


def test_fresh_output_dir_never_reuses_a_run(tmp_path):
    first = tmp_path / "runs" / "x-gdn"
    assert fresh_output_dir(first) == first  # nothing there yet
    first.mkdir(parents=True)
    (first / "metrics.json").write_text("{}")
    assert fresh_output_dir(first) == tmp_path / "runs" / "x-gdn-2"
    assert fresh_output_dir(first, overwrite=True) == first
