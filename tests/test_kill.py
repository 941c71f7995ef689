"""SIGKILL `sinkrec train` at save steps and at a random moment: the folder always loads, its files
agree, and the resumed run ends bitwise equal to an uninterrupted one (benchmarks/kill_training.py
does the same ≥ 50 times)."""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kill_training  # noqa: E402


def test_kills_at_save_steps_and_random_times(tmp_path):
    config = kill_training.write_config(tmp_path, epochs=3)
    reference, seconds = kill_training.reference_run(tmp_path, config)
    rng = random.Random(1)
    # fault points: 1 mid-write of the first model file, 6 after the first manifest, 13 in epoch 2's saves
    folder = tmp_path / "killed"
    for fault in (1, 6, 13):
        assert kill_training.train(folder, config, fault_at=fault) != 0
        kill_training.check(folder)
    kill_training.train(folder, config, kill_after=rng.uniform(0.5, seconds))
    kill_training.check(folder)
    assert kill_training.train(folder, config) == 0
    assert kill_training.check(folder) == "epoch 3 committed"
    assert kill_training.comparable(folder) == reference
