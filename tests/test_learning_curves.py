"""benchmarks/learning_curves.py: seed curves grouped by run name, averaged up to the shortest run."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import learning_curves  # noqa: E402


def write(folder: Path, name: str, curve: list[float]) -> str:
    path = folder / f"{name}.metrics.json"
    path.write_text(json.dumps({"history": [{"valid_ndcg@10": x} for x in curve]}))
    return str(path)


def test_groups_average_over_seeds_and_find_the_95_percent_epoch(tmp_path):
    paths = [write(tmp_path, "syn-a-sinkrec-s0", [0.2, 0.6, 0.9, 1.0]),
             write(tmp_path, "syn-a-sinkrec-s1", [0.4, 0.8, 0.9]),  # stopped early: the mean ends at epoch 3
             write(tmp_path, "syn-a-gdn-s0", [0.1, 0.2, 0.5])]
    groups = learning_curves.load_groups(paths)
    assert sorted(groups) == [("syn-a", "gdn"), ("syn-a", "sinkrec")]
    summary = learning_curves.summarize(groups[("syn-a", "sinkrec")])
    assert summary["seeds"] == 2 and summary["epochs"] == 3
    assert summary["curve"] == [0.3, 0.7, 0.9] and summary["best_valid_ndcg@10"] == 0.9
    assert summary["epoch_to_95pct_of_best"] == 3  # 0.7 < 0.95 · 0.9 ≤ 0.9


def test_unknown_model_name_is_an_error_that_names_the_file(tmp_path):
    path = write(tmp_path, "syn-a-mystery-s0", [0.1])
    with pytest.raises(SystemExit, match="mystery"):
        learning_curves.load_groups([path])
