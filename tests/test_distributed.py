"""Two gloo processes under torchrun follow the same trajectory as one process (same global batch)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

TINY = {"data": {"dataset": "synthetic", "max_len": 30,
                 "synthetic": {"n_users": 64, "n_items": 80, "n_clusters": 4, "min_len": 10, "max_len": 40}},
        "model": {"name": "gdn", "d_model": 16, "n_layers": 1, "dropout": 0.0, "impl": "chunked"},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "patience": 0},
        "eval": {"filter_seen": False}}


def train(tmp_path, name, nproc, resume_from=None, epochs=2):
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": epochs},
                                      "output_dir": str(tmp_path / name)}))
    cmd = ["train", "--config", str(config)] + (["--resume", str(resume_from)] if resume_from else [])
    if nproc == 1:
        cmd = [sys.executable, "-m", "sinkrec.cli", *cmd]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "sinkrec.cli", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_two_processes_match_one(tmp_path):
    one = train(tmp_path, "one", 1)
    two = train(tmp_path, "two", 2)
    for a, b in zip(one["history"], two["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["valid_ndcg@10"] == pytest.approx(a["valid_ndcg@10"], abs=1e-3)
    for key in ("ndcg@10", "hr@10", "mrr", "users"):
        assert two["test"][key] == pytest.approx(one["test"][key], abs=1e-3)
    assert two["test"]["users"] == 64


def test_resume_on_a_different_world_size(tmp_path):
    first = train(tmp_path, "mixed", 2, epochs=1)
    resumed = train(tmp_path, "mixed", 1, resume_from=tmp_path / "mixed" / "last.pt", epochs=2)
    straight = train(tmp_path, "straight", 1, epochs=2)
    assert len(first["history"]) == 1 and len(resumed["history"]) == 2
    assert resumed["history"][1]["loss"] == pytest.approx(straight["history"][1]["loss"], rel=1e-4)
