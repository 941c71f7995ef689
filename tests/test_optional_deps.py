"""A missing optional dependency is a message naming the extra to install, never a false claim."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from sinkrec.errors import ConfigError, DataFormatError

TINY = {"n_users": 40, "n_items": 60, "n_clusters": 4, "min_len": 12, "max_len": 20, "n_routines": 8}


def test_parquet_without_pandas_or_pyarrow_names_the_extra(tmp_path, monkeypatch):
    from sinkrec.data.formats import read_interactions

    path = tmp_path / "events.parquet"
    path.write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(DataFormatError, match=r"events.parquet: reading Parquet needs pandas and pyarrow "
                                              r"\(pip install 'sinkrec\[parquet\]'\)"):
        read_interactions(path)


def test_tensorboard_missing_is_an_error_before_training(tmp_path, monkeypatch):
    from sinkrec.experiment import check_environment, make_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    cfg = make_config({"train": {"tensorboard": True, "device": "cpu"}, "output_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=r"pip install 'sinkrec\[tensorboard\]'"):
        check_environment(cfg)
    cfg.train.tensorboard = False
    check_environment(cfg)


@pytest.fixture(scope="module")
def sinkrec_run(tmp_path_factory):
    import sinkrec

    out = tmp_path_factory.mktemp("diag") / "run"
    config = {"data": {"dataset": "synthetic", "max_len": 20, "synthetic": TINY},
              "model": {"name": "sinkrec", "d_model": 16, "rvq_codes": 8, "code_dim": 8, "window": 4},
              "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "progress": False},
              "eval": {"filter_seen": False}}
    return sinkrec.train(config, output_dir=out, overwrite=True).path


@pytest.mark.parametrize("plots", [False, True])
def test_diagnose_reports_only_the_files_it_wrote(sinkrec_run, tmp_path, monkeypatch, capsys, plots):
    from sinkrec.cli import main

    if plots:
        pytest.importorskip("matplotlib")
    else:
        monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "diag"
    assert main(["diagnose", str(sinkrec_run), "--users", "4", "--length", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (out / "state_sink.json").is_file()
    pngs = sorted(p.name for p in out.glob("*.png"))
    if plots:
        assert pngs == ["probe_heatmap.png", "sink_mass.png"] and "sink_mass.png" in text
        assert "skipped" not in text
    else:
        assert pngs == [] and ".png" not in text
        assert "plots skipped: matplotlib is not installed (pip install 'sinkrec[plots]')" in text
