"""`sinkrec compare`: the table, budgets, and resuming after a kill without redoing finished runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sinkrec.compare import Budget, report, worker
from sinkrec.errors import ConfigError

TINY = ["data.synthetic.n_users=60", "data.synthetic.n_items=80", "data.synthetic.n_clusters=4",
        "data.synthetic.min_len=10", "data.synthetic.max_len=30", "data.max_len=30", "model.d_model=16",
        "train.batch_size=32"]


def test_budget_is_explicit():
    assert Budget.parse("epochs:5").train_settings() == {"epochs": 5, "patience": 0}
    assert "same 2 minutes" in Budget.parse("minutes:2").describe()
    for bad in ("5", "epochs:0", "epochs:1.5", "hours:2"):
        with pytest.raises(ConfigError):
            Budget.parse(bad)


def rec(model, seed, ndcg):
    return {"model": model, "seed": seed, "epochs": 3, "train_seconds": 1.0,
            "metrics": {"ndcg@10": ndcg, "hr@10": ndcg * 2, "ndcg@20": ndcg, "hr@20": ndcg, "mrr": ndcg}}


def test_table_marks_best_flags_below_pop_and_notes_noise():
    records = [rec("pop", 0, 0.10), rec("sasrec", 0, 0.20), rec("sasrec", 1, 0.30), rec("gdn", 0, 0.26),
               rec("gdn", 1, 0.27), rec("sinkrec", 0, 0.05), rec("sinkrec", 1, 0.07)]
    summary = report.summarize(records)
    assert summary["best"]["ndcg@10"] == "gdn" and summary["flags"] == {"sinkrec": "below pop"}
    assert [(a, b) for a, b, *_ in summary["noise"]] == [("gdn", "sasrec")]  # 0.015 apart, sasrec std 0.07
    text = report.markdown(summary, "protocol")
    assert "| gdn | 2 | **0.2650 ± 0.0071** |" in text and "within noise" in text and "below pop" in text


def wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_killed_comparison_resumes_without_redoing_finished_runs(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "sinkrec.cli", "compare", "--models", "pop,itemknn,sasrec", "--seeds", "2",
           "--budget", "epochs:3", "--parallel", "2", "--device", "cpu", "--out", str(out)]
    for text in TINY:
        cmd += ["--set", text]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    runs = out / "runs"
    try:
        assert wait_for(lambda: worker.finished(runs / "pop-s0") and worker.finished(runs / "itemknn-s0"), 90)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and every run it started
        proc.wait()
    done = {name: (runs / name / "metrics.json").stat().st_mtime_ns for name in ("pop-s0", "itemknn-s0")}
    unfinished = [n for n in ("sasrec-s0", "sasrec-s1") if not worker.finished(runs / n)]
    assert unfinished, "the kill came too late to leave an unfinished run"
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{4 - len(unfinished)} finished earlier (reused), {len(unfinished)} to run" in rerun.stdout
    assert all((runs / n / "metrics.json").stat().st_mtime_ns == t for n, t in done.items())
    for model in ("pop", "itemknn", "sasrec"):
        assert any(line.startswith(model) for line in rerun.stdout.splitlines()), rerun.stdout
    payload = json.loads((out / "compare.json").read_text())
    assert payload["complete"] and len(payload["records"]) == 4 and "exactly 3 epochs" in payload["protocol"]
    assert {r["model"] for r in payload["records"]} == {"pop", "itemknn", "sasrec"}
    assert (out / "compare.md").read_text().count("| sasrec | 2 |") == 1


def test_unfinished_run_continues_from_its_checkpoint(tmp_path, caplog):
    from sinkrec.compare import plan

    jobs, _ = plan(None, ["sasrec"], 1, Budget.parse("epochs:2"), tmp_path, overrides=TINY, device="cpu")
    folder = Path(jobs[0]["folder"])
    worker.run(jobs[0])
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["test"] = None  # as a kill between the last epoch and the test score leaves it
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with caplog.at_level("INFO"):
        worker.run(jobs[0])
    assert "resumed from" in caplog.text and worker.finished(folder)
    assert json.loads((folder / "metrics.json").read_text())["epochs"] == 2
