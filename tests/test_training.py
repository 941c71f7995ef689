import json

import pytest
import torch

from sinkrec.cli import main
from sinkrec.data import load_dataset
from sinkrec.experiment import make_config
from sinkrec.training.trainer import Trainer

TINY = {"data": {"dataset": "synthetic", "max_len": 30,
                 "synthetic": {"n_users": 60, "n_items": 80, "n_clusters": 4, "min_len": 10, "max_len": 40}},
        "model": {"name": "sasrec", "d_model": 16, "n_layers": 1, "dropout": 0.1},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "patience": 0},
        "eval": {"filter_seen": False}}


def run(tmp_path, name, epochs, resume=False):
    cfg = make_config({**TINY, "train": {**TINY["train"], "epochs": epochs}, "output_dir": str(tmp_path / name)})
    trainer = Trainer(cfg, load_dataset(cfg.data))
    if resume:
        trainer.resume(tmp_path / name / "last.pt")
    return trainer.fit()


def test_resume_equals_uninterrupted(tmp_path):
    straight = run(tmp_path, "a", 3)
    run(tmp_path, "b", 1)
    resumed = run(tmp_path, "b", 3, resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.test == straight.test
    # and the run really learned something: loss falls
    assert straight.history[-1]["loss"] < straight.history[0]["loss"]


def test_cli_train_evaluate_recommend(tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    import yaml

    config.write_text(yaml.safe_dump({**TINY, "output_dir": str(out)}))
    assert main(["train", "--config", str(config), "--set", "train.epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "ndcg@10" in printed and "oracle" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["ndcg@10"] <= 1.0 and metrics["epochs"] == 1

    assert main(["evaluate", str(out), "--split", "test", "--json", str(tmp_path / "m.json")]) == 0
    again = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert again["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)

    payload = torch.load(out / "best.pt", weights_only=True)
    history = payload["item_ids"][1:6]
    capsys.readouterr()
    assert main(["recommend", str(out), "--history", ",".join(history), "--k", "5", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert len(rec["items"]) == 5 and not set(map(str, rec["items"])) & set(history)
    assert rec["scores"] == sorted(rec["scores"], reverse=True)

    assert main(["recommend", str(out), "--history", "999999"]) == 2
    assert "not in the model's catalogue" in capsys.readouterr().err
    assert main(["recommend", str(out), "--history", ","]) == 2
    assert "history is empty" in capsys.readouterr().err
    assert main(["train", "--set", "train.epoch=1"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
