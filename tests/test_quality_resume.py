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


def test_merge_pools_the_seeds_of_one_label_across_results_files(tmp_path, capsys, monkeypatch):
    def record(seed, ndcg):
        return {"dataset": "d", "model": "gdn", "variant": "v", "seed": seed, "best_epoch": 1,
                "metrics": {"ndcg@10": ndcg, "hr@10": 0.5, "mrr": 0.1}}
    files = []
    for name, records in (("a", [record(0, 0.1)]), ("b", [record(1, 0.2), record(2, 0.3)])):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"records": records}))
    monkeypatch.setattr(sys, "argv", ["quality.py", "--merge", *map(str, files), "--results", str(tmp_path / "m.md")])
    quality.main()
    assert "| d | gdn | v | 3 | 0.2000 ± 0.1000 |" in (tmp_path / "m.md").read_text()
