"""benchmarks/quality.py is a list of studies run by `sinkrec compare`: a rerun reuses finished runs."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402

TINY = ["data.synthetic.n_users=40", "data.synthetic.n_items=60", "data.synthetic.n_clusters=4",
        "data.synthetic.min_len=10", "data.synthetic.max_len=30", "data.max_len=30", "train.batch_size=16",
        "train.epochs=1", "train.device=cpu"]


def test_study_entry_runs_through_compare_and_is_reused(tmp_path, capsys):
    entry = ("tiny", "synthetic", "sasrec:small", ["model.name=sasrec", "model.d_model=16"], [0])
    first = quality.run_entry(entry, TINY, "cpu", 1, tmp_path)
    assert len(first) == 1 and first[0]["variant"] == "small" and first[0]["epochs"] == 1
    second = quality.run_entry(entry, TINY, "cpu", 1, tmp_path)
    assert "1 finished earlier (reused), 0 to run" in capsys.readouterr().out
    assert second[0]["metrics"] == first[0]["metrics"]


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
