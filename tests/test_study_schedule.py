"""The tuned study's scheduler (benchmarks/study.py): which job takes a free slot on the GPU machine."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
study = pytest.importorskip("benchmarks.study")


class FakeJob:
    def __init__(self, s, kind, cmd, log, seed=None):
        self.study, self.kind, self.seed, self.cmd = s, kind, seed, cmd


def trial(number, state, seconds, value=0.1, epochs=1):
    return {"number": number, "state": state, "seconds": seconds, "value": value,
            "intermediate": {str(i): value for i in range(epochs)}, "user_attrs": {"config": {"train": {}}}}


@pytest.fixture
def make(monkeypatch, tmp_path):
    monkeypatch.setattr(study, "Job", FakeJob)
    monkeypatch.setattr(study, "seed_cmd", lambda s, work, device, seed: ["seed", str(seed)])

    def pick(studies, remaining, fill=False, jobs=()):
        return study.next_job(studies, list(jobs), tmp_path, "cpu", remaining, fill=fill)
    return pick


def test_seeds_of_a_finished_study_come_before_trials(make):
    done = study.Study("ml-100k", "gdn", trials=[trial(i, "COMPLETE", 50) for i in range(study.TRIALS)])
    open_ = study.Study("ml-100k", "sasrec", trials=[trial(0, "COMPLETE", 50)])
    job = make([open_, done], remaining=500)
    assert (job.study, job.kind, job.seed) == (done, "seed", 0)


def test_a_trial_that_cannot_finish_waits_unless_slots_would_idle(make):
    slow = study.Study("beauty", "gdn", trials=[trial(0, "COMPLETE", 400)])
    assert make([slow], remaining=300) is None
    job = make([slow], remaining=300, fill=True)  # 0.5 × 480 s estimate fits
    assert job.kind == "tune" and job.cmd[job.cmd.index("--timeout") + 1] == "1"  # one trial, then stop
    assert make([slow], remaining=200, fill=True) is None


def test_a_study_with_only_stopped_trials_gets_a_trial_on_its_guess(make):
    """Stopped trials scaled to the budget over-estimate (they ran while the GPU was shared
    differently): without a complete trial the study still starts one when half its guess fits."""
    guess = study.Study("beauty", "sinkrec", trials=[trial(0, "FAIL", 400, epochs=15)])  # ≈ 800 s
    assert make([guess], remaining=520).kind == "tune"
    assert make([guess], remaining=400) is None


def test_a_full_study_gets_no_more_workers(make):
    s = study.Study("ml-100k", "gdn", trials=[trial(0, "COMPLETE", 50)])
    busy = [FakeJob(s, "tune", [], None) for _ in range(study.WORKERS_PER_STUDY)]
    assert make([s], remaining=500, jobs=busy) is None


def stopped_trial(number, folder, epoch):
    """A trial killed at the deadline after committing `epoch` (a run folder with its manifest)."""
    import json

    folder.mkdir(parents=True)
    names = {"model": f"model-{epoch:04d}.pt", "best_model": f"model-{epoch:04d}.pt", "state": f"state-{epoch:04d}.pt"}
    for name in set(names.values()):
        (folder / name).write_bytes(b"x" * 1000)
    (folder / "metrics.json").write_text(json.dumps({"checkpoint": {"format": 2, "epoch": epoch, **names}}))
    return {**trial(number, "FAIL", None, epochs=epoch), "params": {"train.lr": 0.001},
            "user_attrs": {"run": str(folder)}}


def test_stopped_trials_are_kept_and_restored_where_they_ran(tmp_path):
    import shutil

    s = study.Study("beauty", "gdn", trials=[stopped_trial(0, tmp_path / "work" / "trial-0000", 20),
                                             {**trial(1, "FAIL", None), "params": {"train.lr": 0.01},
                                              "user_attrs": {"error": "NonFiniteError", "run": "x"}}])
    kept = study.keep_stopped([s], tmp_path / "keep", megabytes=1)
    assert kept == ["beauty-gdn/trial-0000 (epoch 20, 0.0 MB)"]
    assert sorted(p.name for p in (tmp_path / "keep" / "beauty-gdn" / "trial-0000").iterdir()) == [
        "metrics.json", "model-0020.pt", "state-0020.pt"]
    assert study.keep_stopped([s], tmp_path / "small", megabytes=0.001) == []  # over the size limit
    shutil.rmtree(tmp_path / "work")
    assert study.restore_stopped([s], tmp_path / "keep") == ["beauty-gdn/trial-0000"]
    assert study.committed(tmp_path / "work" / "trial-0000")[0] == 20


def test_a_stopped_trial_to_continue_goes_first_with_what_is_left_of_it(make, tmp_path):
    other = study.Study("ml-100k", "gdn", trials=[trial(0, "COMPLETE", 50)])
    slow = study.Study("beauty", "sinkrec", trials=[trial(0, "COMPLETE", 450),
                                                    stopped_trial(1, tmp_path / "t1", 20)])  # 10 of 30 epochs left
    job = make([other, slow], remaining=200)  # 450 s × 1.2 × 1/3 fits in 200 s without filling
    assert job.study is slow and job.kind == "tune"
    assert make([study.Study("beauty", "sinkrec", trials=[trial(0, "COMPLETE", 450)])], remaining=200) is None


def test_files_to_go_name_only_the_data_of_unfinished_studies(tmp_path, capsys):
    """study_device.sh reads this output as file names: no banner, and finished studies add nothing."""
    import json

    from sinkrec.data.catalog import lookup

    assert study.main(["plan", "--files-to-go", "--state", str(tmp_path)]) == 0  # nothing run yet: every dataset
    every = set(capsys.readouterr().out.split())
    assert every == {name for key in study.DATASETS for info in [lookup(study.DATASETS[key][0])]
                     for name in (info.filename, *info.local_names)}
    done = [trial(n, "COMPLETE", 1.0) for n in range(study.TRIALS)]
    seeds = [{"seed": s, "test": {"ndcg@10": 0.1}, "valid": {"ndcg@10": 0.1}} for s in study.SEEDS]
    for model in study.MODELS:  # every ML-100K study finished
        (tmp_path / f"ml-100k-{model}.json").write_text(json.dumps({"trials": done, "seeds": seeds}))
    study.main(["plan", "--files-to-go", "--state", str(tmp_path)])
    left = set(capsys.readouterr().out.split())
    ml100k = lookup(study.DATASETS["ml-100k"][0])
    assert left == every - {ml100k.filename, *ml100k.local_names}
