"""Checkpoints run no code: a crafted pickle under every loading command is a SinkrecError, nothing more."""

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinkrec.api import evaluate, train
from sinkrec.cli import main
from sinkrec.errors import CheckpointError, SinkrecError
from sinkrec.recommend import Recommender
from sinkrec.training import checkpoint, runfolder

TINY = {"data": {"dataset": "synthetic", "max_len": 20,
                 "synthetic": {"n_users": 40, "n_items": 50, "n_clusters": 4, "min_len": 8, "max_len": 20}},
        "model": {"name": "sasrec", "d_model": 8, "n_layers": 1, "dropout": 0.1},
        "train": {"epochs": 2, "batch_size": 8, "progress": False, "patience": 0, "device": "cpu"},
        "eval": {"filter_seen": False}}
MARKER = Path("/tmp/sinkrec-pwned-marker")


class Payload:
    """Unpickling this creates MARKER: proof that code ran."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


def crafted(path: Path, pickled_zip: bool = True) -> Path:
    """A file that runs code when unpickled: a torch archive (as torch.save writes) or a bare pickle."""
    obj = {"format": "sinkrec-model", "model": {}, "evil": Payload()}
    if pickled_zip:
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train({**TINY, "output_dir": str(out)})
    return out


@pytest.fixture
def evil_run(run_dir, tmp_path):
    """A copy of a real run whose every model and state file is a crafted pickle."""
    MARKER.unlink(missing_ok=True)
    folder = tmp_path / "evil"
    shutil.copytree(run_dir, folder)
    for path in folder.glob("*.pt"):
        path.unlink()
        crafted(path)
    crafted(folder / "lm.pt")  # what `sinkrec lm generate FOLDER` reads
    yield folder
    assert not MARKER.exists(), "a crafted checkpoint ran code"


@pytest.mark.parametrize("target", ["folder", "best.pt", "bare-pickle"])
def test_loading_commands_run_no_code(evil_run, target, capsys, tmp_path):
    path = {"folder": evil_run, "best.pt": evil_run / "best.pt",
            "bare-pickle": crafted(tmp_path / "bare.pt", pickled_zip=False)}[target]
    commands = [["evaluate", str(path)], ["recommend", str(path), "--history", "1"],
                ["diagnose", str(path), "--out", str(tmp_path / "d")], ["lm", "generate", str(path)]]
    if target == "folder":
        commands.append(["train", "--config", str(write_config(tmp_path, evil_run)), "--resume"])
    for args in commands:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("sinkrec: error:") and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SinkrecError):
        Recommender.from_run(path)
    with pytest.raises(SinkrecError):
        evaluate(path)


def write_config(tmp_path, output):
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "output_dir": str(output)}))
    return config


def test_old_pickled_checkpoint_has_a_clear_error(tmp_path):
    import numpy as np

    old = {"config": TINY, "model": {}, "rng": {"numpy": np.random.get_state()}, "item_ids": ["", "1"]}
    torch.save(old, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="sinkrec < 0.2"):
        Recommender.from_run(tmp_path / "best.pt")
    (tmp_path / "metrics.json").write_text(json.dumps({"best_epoch": 1}))  # an old run folder
    with pytest.raises(CheckpointError, match="sinkrec < 0.2"):
        Recommender.from_run(tmp_path)


def test_model_file_is_small_and_plain(run_dir):
    manifest = runfolder.verify(run_dir)
    model = checkpoint.read(run_dir / manifest["checkpoint"]["best_model"])
    assert set(model) >= {"config", "model", "item_ids", "fingerprint"} and "optimizer" not in model
    assert all(isinstance(i, str) for i in model["item_ids"])
    state = checkpoint.read(run_dir / manifest["checkpoint"]["state"], checkpoint.STATE_FORMAT)
    assert "optimizer" in state and "model" not in state


def test_changed_d_model_is_named(run_dir, tmp_path):
    payload = runfolder.load_model(run_dir)
    payload["config"]["model"]["d_model"] = 16
    (tmp_path / "m.pt").write_bytes(checkpoint.to_bytes(payload))
    with pytest.raises(CheckpointError, match="d_model"):
        Recommender.from_run(tmp_path / "m.pt")


# ---- fuzz: random bytes, truncated and mutated real files, crafted pickles ---------------------------
def load_outcome(path: Path):
    try:
        payload = checkpoint.read(path)
        checkpoint.model_from_checkpoint(payload, str(path))
        return payload
    except SinkrecError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
        return None


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=2000))
def test_fuzz_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "m.pt"
    path.write_bytes(data)
    assert load_outcome(path) is None


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                                       st.integers(1, 255)), max_size=4))
def test_fuzz_truncated_and_mutated(run_dir, tmp_path_factory, cut, flips):
    original = (run_dir / "best.pt").read_bytes()
    data = bytearray(original)
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    if not flips:
        data = data[: int(cut * len(data))]
    path = tmp_path_factory.mktemp("fuzz") / "m.pt"
    path.write_bytes(bytes(data))
    MARKER.unlink(missing_ok=True)
    loaded = load_outcome(path)
    if loaded is not None:  # only a harmless change (padding, unused metadata): the weights are intact
        reference = checkpoint.read(run_dir / "best.pt")
        assert all(torch.equal(loaded["model"][k], v) for k, v in reference["model"].items())
        assert loaded["item_ids"] == reference["item_ids"]


@FUZZ
@given(members=st.lists(st.sampled_from(["data.pkl", "data/0", "version", "byteorder"]), max_size=4, unique=True),
       evil=st.booleans())
def test_fuzz_crafted_archives(tmp_path_factory, members, evil):
    path = tmp_path_factory.mktemp("fuzz") / "m.pt"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in members:
            body = pickle.dumps(Payload() if evil else {"format": "sinkrec-model"}) if name == "data.pkl" else b"1"
            archive.writestr(f"archive/{name}", body)
    path.write_bytes(buffer.getvalue())
    MARKER.unlink(missing_ok=True)
    assert load_outcome(path) is None
    assert not MARKER.exists()


# ---- crafted sizes: refused before the file is read or the model is allocated -------------------------------
def test_file_and_pickle_size_caps_with_overrides(run_dir, monkeypatch):
    path = run_dir / "best.pt"
    monkeypatch.setenv("SINKREC_MAX_CHECKPOINT_BYTES", str(path.stat().st_size - 1))
    with pytest.raises(CheckpointError, match="SINKREC_MAX_CHECKPOINT_BYTES"):
        checkpoint.read(path)
    monkeypatch.setenv("SINKREC_MAX_CHECKPOINT_BYTES", str(path.stat().st_size))
    monkeypatch.setenv("SINKREC_MAX_CHECKPOINT_PICKLE_BYTES", "100")
    with pytest.raises(CheckpointError, match="SINKREC_MAX_CHECKPOINT_PICKLE_BYTES"):
        checkpoint.read(path)
    monkeypatch.delenv("SINKREC_MAX_CHECKPOINT_PICKLE_BYTES")
    assert checkpoint.read(path)["n_items"] > 0


def test_config_asking_for_a_huge_model_is_refused_before_it_is_built(run_dir, tmp_path, monkeypatch):
    import sinkrec.models

    devices = []
    real_build = sinkrec.models.build_model

    def spy(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(sinkrec.models, "build_model", spy)
    payload = runfolder.load_model(run_dir)
    payload["config"]["model"]["d_model"] = 8192  # several GB of weights if it were allocated
    (tmp_path / "m.pt").write_bytes(checkpoint.to_bytes(payload))
    with pytest.raises(CheckpointError, match="d_model") as info:
        Recommender.from_run(tmp_path / "m.pt")
    assert devices == ["meta"] and len(str(info.value)) <= 1000
    devices.clear()
    Recommender.from_run(run_dir / "best.pt")  # a real file: checked on meta, then built once
    assert devices == ["meta", "cpu"]


@pytest.mark.parametrize("change", ["version_str", "version_list", "dtype", "key"])
def test_crafted_values_give_short_one_line_errors(run_dir, tmp_path, change):
    payload = runfolder.load_model(run_dir)
    name = next(iter(payload["model"]))
    if change == "version_str":
        payload["version"] = "v\n" * 1_000_000
    elif change == "version_list":
        payload["version"] = list(range(1_000_000))
    elif change == "dtype":
        payload["model"][name] = payload["model"][name].double()
    else:
        payload["model"]["k" * 1_000_000] = payload["model"].pop(name)
    path = tmp_path / "m.pt"
    path.write_bytes(checkpoint.to_bytes(payload))
    with pytest.raises(CheckpointError) as info:
        checkpoint.model_from_checkpoint(checkpoint.read(path), str(path))
    message = str(info.value)
    assert "\n" not in message and len(message) <= 1000
    expected = {"version_str": "version", "version_list": "version [0, 1, 2, 3, ...]", "dtype": "float64",
                "key": "unexpected"}
    assert expected[change] in message
