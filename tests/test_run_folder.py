"""Run folders: manifest layout, the lock, loud divergence, data fingerprints, config changes on resume."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from sinkrec.api import Run, evaluate, train
from sinkrec.cli import main
from sinkrec.data import load_dataset
from sinkrec.errors import NonFiniteError, SinkrecError
from sinkrec.experiment import make_config
from sinkrec.recommend import Recommender
from sinkrec.training import checkpoint, runfolder
from sinkrec.training.trainer import Trainer

from .test_checkpoints import TINY


def config_file(tmp_path, output, **train_keys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], **train_keys}, "output_dir": str(output)}))
    return str(path)


def test_layout_manifest_and_loading(tmp_path):
    out = tmp_path / "run"
    run = train({**TINY, "train": {**TINY["train"], "epochs": 3}, "output_dir": str(out)})
    manifest = runfolder.verify(out)
    files = manifest["checkpoint"]
    assert manifest["best_epoch"] == run.best_epoch and manifest["test"] == run.test
    names = {p.name for p in out.iterdir()}
    assert names == {files["model"], files["best_model"], files["state"], "metrics.json", "best.pt", "run.lock"}
    assert os.path.samefile(out / "best.pt", out / files["best_model"])
    opened = Run.open(out)
    assert opened.best_epoch == run.best_epoch and opened.test == run.test
    again = evaluate(out)
    assert again["ndcg@10"] == pytest.approx(run.test["ndcg@10"], abs=1e-6)
    assert evaluate(out / "best.pt")["ndcg@10"] == again["ndcg@10"]  # a model file works too
    Recommender.from_run(out / files["best_model"])


def test_second_run_on_a_locked_folder_names_the_other_process(tmp_path, capsys, monkeypatch):
    import sinkrec.data

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sinkrec.training import lock; "
                               f"lock.acquire({str(out)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with monkeypatch.context() as patch:  # the busy folder is found before the data is loaded
            patch.setattr(sinkrec.data, "load_dataset", lambda *a, **k: pytest.fail("data loaded first"))
            assert main(["train", "--config", config_file(tmp_path, out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use" in err
    finally:
        holder.kill()
        holder.wait()
    (out / "run.lock").write_text(json.dumps({"pid": 2**22 + 7, "host": "elsewhere"}))  # stale: nobody holds it
    assert main(["train", "--config", config_file(tmp_path, out, epochs=1), "--resume"]) == 0


def test_divergence_stops_loudly_and_keeps_the_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", config_file(tmp_path, out, epochs=1)]) == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.pt")} | {"m": (out / "metrics.json").read_bytes()}
    cfg = make_config({**TINY, "train": {**TINY["train"], "epochs": 3}, "output_dir": str(out)})
    trainer = Trainer(cfg, load_dataset(cfg.data))
    trainer.resume(out)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"epoch 2, step 1: the loss is nan; lower train.lr"):
        trainer.fit()
    after = {p.name: p.read_bytes() for p in out.glob("*.pt")} | {"m": (out / "metrics.json").read_bytes()}
    assert after == before
    capsys.readouterr()
    assert main(["train", "--config", config_file(tmp_path, tmp_path / "huge", lr=1e30)]) == 2
    err = capsys.readouterr().err
    assert "diverged at epoch 1" in err and "train.lr" in err and "nothing was saved" in err
    assert not list((tmp_path / "huge").glob("*.pt"))


def test_non_finite_scores_are_an_error(tmp_path):
    out = tmp_path / "run"
    train({**TINY, "train": {**TINY["train"], "epochs": 1}, "output_dir": str(out)})
    payload = runfolder.load_model(out)
    payload["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                        for k, v in payload["model"].items()}
    (tmp_path / "nan.pt").write_bytes(checkpoint.to_bytes(payload))
    rec = Recommender.from_run(tmp_path / "nan.pt")
    with pytest.raises(NonFiniteError):
        rec.recommend([payload["item_ids"][1]])
    with pytest.raises(NonFiniteError):
        evaluate(tmp_path / "nan.pt")


def test_changed_data_is_refused(tmp_path, capsys):
    rows = ["user_id,item_id,timestamp"] + [f"u{u},i{(u * 7 + s) % 30},{s}" for u in range(30) for s in range(8)]
    data = tmp_path / "log.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    train(data=data, model="sasrec", overrides=["train.epochs=1", "train.progress=false", "model.d_model=8",
                                                 "data.max_len=10"], device="cpu", output_dir=out)
    data.write_text("\n".join(rows[:1] + [r.replace(",i1,", ",i1x,") for r in rows[1:]]) + "\n")
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other data" in err and "data file's content" in err and "item id map" in err
    assert main(["train", str(data), "--model", "sasrec", "--output", str(out), "--resume", "--set",
                 "train.epochs=2", "--set", "model.d_model=8", "--set", "data.max_len=10"]) == 2
    assert "other data" in capsys.readouterr().err


def test_resume_refuses_a_changed_config_except_safe_keys(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", config_file(tmp_path, out, epochs=1)]) == 0
    capsys.readouterr()
    assert main(["train", "--config", config_file(tmp_path, out), "--resume", "--set", "train.lr=0.01",
                 "--set", "model.d_model=16"]) == 2
    err = capsys.readouterr().err
    assert "train.lr (0.001 → 0.01)" in err and "model.d_model (8 → 16)" in err and "train.epochs" in err
    assert main(["train", "--config", config_file(tmp_path, out, epochs=2, patience=3), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_a_finished_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    first = train({**TINY, "train": {**TINY["train"], "epochs": 1}, "output_dir": str(out)})
    second = train({**TINY, "train": {**TINY["train"], "epochs": 1}, "output_dir": str(out)})
    assert first.path == out and second.path == tmp_path / "run-2"
    with pytest.raises(SinkrecError, match="not a run folder"):
        Run.open(tmp_path / "nothing")
