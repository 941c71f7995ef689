import pytest

from sinkrec.config import build_config, load_raw, parse_override
from sinkrec.errors import ConfigError
from sinkrec.experiment import load_config, make_config


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.lr_rate'.*did you mean 'lr'"):
        build_config({"train": {"lr_rate": 1}})
    with pytest.raises(ConfigError, match=r"unknown key 'model.d_modle'.*'d_model'"):
        make_config({"model": {"name": "sasrec", "d_modle": 32}})
    with pytest.raises(ConfigError, match=r"unknown model 'sasrc'.*'sasrec'"):
        make_config({"model": {"name": "sasrc"}})


def test_schema_leaves_model_options_to_the_registry():
    cfg = build_config({"model": {"name": "gdn", "d_model": 32}})
    assert cfg.model == {"name": "gdn", "d_model": 32}  # not filled, not checked: config imports no model
    full = make_config({"model": {"name": "gdn", "d_model": 32}})
    assert full.model["d_model"] == 32 and full.model["n_layers"] == 2
    assert make_config(full.to_dict()) == full  # a checkpoint's config validates to itself
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_config({"model": "gdn"})


def test_types_are_checked():
    with pytest.raises(ConfigError, match=r"^train.epochs: expected an integer"):
        build_config({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"expected true/false"):
        build_config({"eval": {"filter_seen": "maybe"}})


def test_aliases_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("MAX_ITEM_LIST_LENGTH: 50\ntopk: [5, 10]\nmodel: {name: sasrec, n_layers: 3}\n")
    cfg = load_config(str(path), ["train.lr=3e-4", "model.dropout=0.5", "valid_metric=hr@10"])
    assert cfg.data.max_len == 50 and cfg.eval.topk == [5, 10] and cfg.train.lr == 3e-4
    assert cfg.model["n_layers"] == 3 and cfg.model["dropout"] == 0.5 and cfg.eval.valid_metric == "hr@10"
    assert parse_override("data.synthetic.n_users=7") == {"data": {"synthetic": {"n_users": 7}}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        load_config(str(tmp_path / "missing.yaml"))


def test_cli_reports_bad_values_without_a_traceback(capsys):
    from sinkrec.cli import main

    assert main(["train", "--set", "train.schedule=linear", "--set", "train.epochs=1"]) == 2
    assert "train.schedule must be one of constant | cosine, got 'linear'" in capsys.readouterr().err
    assert main(["train", "--set", "model.d_model=30", "--set", "model.attn_heads=4"]) == 2
    assert "model.attn_heads must divide d_model (30), got 4" in capsys.readouterr().err


BAD_VALUES = [  # (raw config, the start of the one-line message: key and allowed range)
    ({"model": {"name": "sasrec", "d_model": 0}}, "model.d_model must be ≥ 1, got 0"),
    ({"data": {"max_len": -3}}, "data.max_len must be ≥ 1, got -3"),
    ({"train": {"epochs": 0}}, "train.epochs must be ≥ 1, got 0"),
    ({"train": {"batch_size": -1}}, "train.batch_size must be ≥ 1, got -1"),
    ({"eval": {"batch_size": 0}}, "eval.batch_size must be ≥ 1, got 0"),
    ({"train": {"lr": "nan"}}, "train.lr must be a finite number > 0, got nan"),
    ({"train": {"lr": "inf"}}, "train.lr must be a finite number > 0, got inf"),
    ({"train": {"lr": -1e-3}}, "train.lr must be a finite number > 0, got -0.001"),
    ({"train": {"lr": 0}}, "train.lr must be a finite number > 0, got 0.0"),
    ({"train": {"weight_decay": -0.1}}, "train.weight_decay must be ≥ 0, got -0.1"),
    ({"train": {"grad_clip": "nan"}}, "train.grad_clip must be ≥ 0, got nan"),
    ({"train": {"seed": -1}}, "train.seed must be an integer in [0, 2**63 - 1], got -1"),
    ({"train": {"loss": "bpr"}}, "train.loss must be one of ce | sampled, got 'bpr'"),
    ({"train": {"schedule": "Cosine"}}, "train.schedule must be one of constant | cosine, got 'Cosine' (did you mean "
                                        "'cosine'?)"),
    ({"train": {"negatives": "in_batch"}}, "train.negatives must be one of uniform | in-batch, got 'in_batch' (did "
                                           "you mean 'in-batch'?)"),
    ({"train": {"compile_mode": "fast"}}, "train.compile_mode must be one of default | reduce-overhead"),
    ({"train": {"device": "gpu"}}, "train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ({"train": {"patience": -1}}, "train.patience must be ≥ 0"),
    ({"eval": {"topk": [10, 0]}}, "eval.topk must hold integers ≥ 1, got 0"),
    ({"eval": {"topk": []}}, "eval.topk must list at least one cut-off"),
    ({"eval": {"valid_metric": "ndcg@5"}}, "eval.valid_metric must be a metric computed for eval.topk [10, 20, 50]"),
    ({"eval": {"valid_metric": "auc"}}, "eval.valid_metric must be a metric computed"),
    ({"data": {"format": "xls"}}, "data.format must be one of auto | sasrec"),
    ({"data": {"columns": {"usr": "a"}}}, "data.columns keys must be"),
    ({"data": {"dataset": ""}}, "data.dataset must be a non-empty string"),
    ({"data": {"synthetic": {"routine_share": 1.5}}}, "data.synthetic.routine_share must be in [0, 1], got 1.5"),
    ({"data": {"synthetic": {"min_len": 50, "max_len": 10}}}, "data.synthetic.max_len must be ≥ min_len (50)"),
    ({"output_dir": " "}, "output_dir must be a non-empty string"),
    ({"model": {"name": "sasrec", "dropout": 1.0}}, "model.dropout must be in [0, 1), got 1.0"),
    ({"model": {"name": "gdn", "dropout": -0.1}}, "model.dropout must be in [0, 1), got -0.1"),
    ({"model": {"name": "sasrec", "d_model": 30, "n_heads": 4}}, "model.n_heads must divide d_model (30), got 4"),
    ({"model": {"name": "gdn", "d_model": 30, "n_heads": 4}}, "model.n_heads must divide d_model (30), got 4"),
    ({"model": {"name": "gdn", "impl": "cuda"}}, "model.impl must be one of auto | reference | chunked | triton"),
    ({"model": {"name": "sessa", "n_heads": 4, "n_kv_heads": 3}}, "model.n_kv_heads must divide n_heads (4)"),
    ({"model": {"name": "sessa", "mixer": "mamba"}}, "model.mixer must be one of sessa | attention | gdn"),
    ({"model": {"name": "sessa", "gamma_max": 1.0}}, "model.gamma_max must be in (0, 1), got 1.0"),
    ({"model": {"name": "sinkrec", "loops": 0}}, "model.loops must be ≥ 1, got 0"),
    ({"model": {"name": "sinkrec", "prototype_levels": 9}}, "model.prototype_levels must be ≤ rvq_levels ("),
    ({"model": {"name": "sinkrec", "rvq_mode": "kmeans"}}, "model.rvq_mode must be one of ema | grad"),
    ({"model": {"name": "sinkrec", "rvq_decay": 1.0}}, "model.rvq_decay must be in [0, 1), got 1.0"),
    ({"model": {"name": "sinkrec", "time_unit": 0}}, "model.time_unit must be a finite number > 0"),
    ({"model": {"name": "sinkrec", "lambda_max": -1}}, "model.lambda_max must be ≥ 0"),
]


@pytest.mark.parametrize("raw, message", BAD_VALUES, ids=[m.split(" ")[0] for _, m in BAD_VALUES])
def test_every_value_is_range_checked_when_the_config_is_built(raw, message):
    with pytest.raises(ConfigError) as info:
        make_config(raw)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_the_defaults_and_every_shipped_config_pass_the_checks():
    from sinkrec import configs

    make_config({})
    for name in configs.names():
        load_config(str(configs.locate(name)))


def test_did_you_mean_never_misleads():
    def message(model, key):
        with pytest.raises(ConfigError) as info:
            make_config({"model": {"name": model, key: 1}})
        return str(info.value)

    assert "did you mean 'n_blocks'" in message("sinkrec", "n_layers")  # not n_heads: a synonym, not a spelling
    assert "did you mean 'n_layers'" in message("gdn", "n_blocks")
    assert "did you mean 'd_model'" in message("sasrec", "hidden_size")
    assert "did you mean 'd_model'" in message("sasrec", "d_modle")
    assert "did you mean 'n_heads'" in message("sessa", "num_heads")
    text = message("sasrec", "window")  # no close key: the valid keys, no guess
    assert "did you mean" not in text and "valid keys: d_model, dropout, ffn_mult, n_heads, n_layers" in text
    assert "model 'sasrec'" in text
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'; did you mean 'epochs'"):
        build_config({"train": {"epoch": 3}})
    with pytest.raises(ConfigError) as info:
        build_config({"train": {"xyz": 3}})
    assert "did you mean" not in str(info.value) and "valid keys: batch_size, bf16" in str(info.value)


def test_cli_rejects_bad_values_before_reading_data(tmp_path, capsys):
    from sinkrec.cli import main

    missing = tmp_path / "missing.csv"  # the value error must come first: no data is read
    assert main(["train", str(missing), "--set", "train.loss=bpr"]) == 2
    err = capsys.readouterr().err
    assert "train.loss must be one of ce | sampled, got 'bpr'" in err and "missing.csv" not in err
    assert len(err.strip().splitlines()) == 1


def test_environment_checks_name_the_problem(tmp_path, monkeypatch, capsys):
    import torch

    from sinkrec.cli import main
    from sinkrec.experiment import check_output_dir

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--device", "cuda", "--set", "train.epochs=1", "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no CUDA GPU is available" in err and len(err.splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--set", "train.epochs=1", "--output", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "output_dir" in err and "is a file, not a folder" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        check_output_dir(blocker)
    check_output_dir(tmp_path / "new" / "deeper")  # creatable: fine, and nothing is created yet
    assert not (tmp_path / "new").exists()


# ---- crafted files: sizes, alias bombs and huge values are refused before they cost memory ---------------
LEVELS = ["&a [" + ", ".join(["lol"] * 9) + "]"] + [f"&{c} [{', '.join([f'*{p}'] * 9)}]"
                                                    for p, c in zip("abcdefgh", "bcdefghi")]
BOMB = "data: {split_times: [[" + ", ".join(LEVELS) + "]]}\n"  # 9**9 = 387M values once walked (e.g. printed)

REFUSE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a regression fails here instead of eating the machine
from sinkrec.config import build_config, load_raw
from sinkrec.errors import ConfigError
try:
    build_config(load_raw(sys.argv[1]))
except ConfigError as exc:
    print("refused:", exc)
"""


def refused(path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", REFUSE, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    return out.stdout


def test_yaml_alias_bomb_is_refused(tmp_path):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    text = refused(tmp_path / "bomb.yaml")
    assert "refused:" in text and "alias" in text and len(text) < 300


def test_recursive_and_deep_yaml_are_refused(tmp_path):
    (tmp_path / "loop.yaml").write_text("data: &x {dataset: ml-1m, more: *x}\n")
    with pytest.raises(ConfigError, match="contains itself"):
        load_raw(str(tmp_path / "loop.yaml"))
    (tmp_path / "deep.yaml").write_text("model: " + "[" * 40 + "]" * 40 + "\n")
    with pytest.raises(ConfigError, match="levels deep"):
        load_raw(str(tmp_path / "deep.yaml"))
    shared = "a: &a [1, 2]\ndata: {split_times: *a}\neval: {topk: *a}\n"  # ordinary aliases stay fine
    (tmp_path / "shared.yaml").write_text(shared)
    assert load_raw(str(tmp_path / "shared.yaml"))["eval"]["topk"] == [1, 2]


def test_config_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("train: {epochs: 3}\n# " + "x" * 2_000_000 + "\n")
    with pytest.raises(ConfigError, match="SINKREC_MAX_CONFIG_BYTES"):
        load_raw(str(path))
    monkeypatch.setenv("SINKREC_MAX_CONFIG_BYTES", str(4 << 20))
    assert load_raw(str(path)) == {"train": {"epochs": 3}}


def test_huge_values_make_short_one_line_messages(tmp_path):
    for raw in ({"train": {"epochs": "9" * 100_000}}, {"data": {"dataset": ["x" * 10_000] * 5_000}},
                {"train": {"lr": "a\n" * 50_000}}, {"model": {"name": "z" * 1_000_000}}):
        with pytest.raises(ConfigError) as info:
            make_config(raw)
        message = str(info.value)
        assert "\n" not in message and len(message) <= 1000, message[:2000]
    with pytest.raises(ConfigError) as info:
        parse_override("train.lr=" + "[" * 5 + "x" * 3_000_000)
    assert len(str(info.value)) < 400


def test_size_limits_from_the_environment(monkeypatch):
    from sinkrec.errors import SinkrecError, env_bytes

    name = "SINKREC_MAX_TEST_BYTES"
    monkeypatch.setenv(name, "12")
    assert env_bytes(name, 5) == 12
    monkeypatch.setenv(name, "")
    assert env_bytes(name, 5) == 5
    monkeypatch.setenv(name, "1e9")  # every SINKREC_MAX_* variable is read by this one function
    with pytest.raises(SinkrecError, match=f"{name} must be a number of bytes, got '1e9'"):
        env_bytes(name, 5)
