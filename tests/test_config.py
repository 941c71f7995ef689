import pytest

from sinkrec.config import build_config, parse_override
from sinkrec.errors import ConfigError
from sinkrec.experiment import load_config, make_config


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'config.train.lr_rate'.*did you mean 'lr'"):
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
    with pytest.raises(ConfigError, match=r"config.train.epochs: expected an integer"):
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
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_cli_reports_bad_values_without_a_traceback(capsys):
    from sinkrec.cli import main

    assert main(["train", "--set", "train.schedule=linear", "--set", "train.epochs=1"]) == 2
    assert "train.schedule must be 'constant' or 'cosine'" in capsys.readouterr().err
    assert main(["train", "--set", "model.d_model=30", "--set", "model.attn_heads=4"]) == 2
    assert "not divisible" in capsys.readouterr().err
