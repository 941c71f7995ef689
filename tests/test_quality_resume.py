"""benchmarks/quality.py --resume: finished runs are reused, unfinished ones continue from last.pt."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402

TINY = ["model.name=sasrec", "data.synthetic.n_users=40", "data.synthetic.n_items=60", "data.synthetic.n_clusters=4",
        "data.synthetic.min_len=10", "data.synthetic.max_len=30", "data.max_len=30", "train.batch_size=16"]


def test_resume_continues_unfinished_and_reuses_finished(tmp_path):
    job = {"dataset": "tiny", "config": "synthetic", "variant": "sasrec", "overrides": TINY, "seed": 0}
    first = quality.run_one(job, ["train.epochs=1"], "cpu", tmp_path, None, resume=False)
    assert "error" not in first and first["epochs"] == 1
    folder, log = tmp_path / "tiny-sasrec-s0", tmp_path / "tiny-sasrec-s0.log"
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["test"] = None  # as a run stopped by a time limit leaves it
    (folder / "metrics.json").write_text(json.dumps(metrics))
    second = quality.run_one(job, ["train.epochs=2"], "cpu", tmp_path, None, resume=True)
    assert "error" not in second and second["epochs"] == 2
    assert "resumed from" in log.read_text()
    size = log.stat().st_size
    third = quality.run_one(job, ["train.epochs=2"], "cpu", tmp_path, None, resume=True)
    assert third["metrics"] == second["metrics"] and log.stat().st_size == size  # not trained again
