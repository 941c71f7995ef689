"""Property tests for building a config: whatever the input (nested mappings, values, `--set` strings),
the outcome is a valid Config or a one-line `SinkrecError` naming the key, never another exception."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinkrec.config import ALIASES, Config, load_raw
from sinkrec.describe import describe_fields
from sinkrec.errors import SinkrecError
from sinkrec.experiment import make_config
from sinkrec.models.registry import MODELS

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECTION_KEYS = [row.name for row in describe_fields(Config) if not row.name.startswith("model")]
MODEL_KEYS = sorted({f.name for _, options in MODELS.values() for f in dataclasses.fields(options)})
WORDS = sorted({part for key in SECTION_KEYS + MODEL_KEYS for part in key.split(".")} | set(ALIASES)
               | {"data", "model", "train", "eval", "name", *MODELS})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2), st.text(max_size=12), st.sampled_from(["auto", "cpu", "cuda", "ce", "sampled", "cosine",
                                                              "ndcg@10", "mrr", "csv", "in-batch", "sasrec", "gdn",
                                                              "sinkrec", "sessa", "1e-3", "nan", "-1", "true", ""]),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=10), st.integers(-2, 2))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


# values of the right kind, often in range: most draws of these build a Config, the rest probe the edges
plausible = st.one_of(st.integers(-2, 300), st.integers(0, 64), st.floats(-0.5, 1.5), st.booleans(),
                      st.sampled_from(["auto", "cpu", "ce", "sampled", "cosine", "constant", "uniform", "in-batch",
                                       "ndcg@10", "hr@20", "mrr", "csv", "jsonl", "ema", "grad", "chunked", "sessa",
                                       "attention", "default", "runs/x", "synthetic"]),
                      st.lists(st.integers(-1, 60), max_size=3))
per_key = st.one_of(plausible, plausible, plausible, values)


def key_names(raw) -> set[str]:
    """Every key at any depth of a raw mapping, as text."""
    found: set[str] = set()
    if isinstance(raw, dict):
        for key, value in raw.items():
            found.add(str(key))
            found |= set(ALIASES.get(key, "").split(".")) - {""}  # RecBole names expand to our keys
            found |= key_names(value)
    elif isinstance(raw, list):
        for value in raw:
            found |= key_names(value)
    return found


def outcome(raw, mentioned: set[str]) -> None:
    """make_config either returns a Config that validates to itself or raises a one-line SinkrecError
    naming one of the keys involved."""
    try:
        cfg = make_config(raw)
    except SinkrecError as exc:
        text = str(exc)
        assert text and "\n" not in text and "\r" not in text, text
        assert any(name in text for name in mentioned | {"config", "model", "output_dir"}), text
        return
    assert isinstance(cfg, Config)
    assert cfg.train.lr > 0 and math.isfinite(cfg.train.lr) and cfg.train.epochs >= 1
    assert 0 <= cfg.model["dropout"] < 1 if "dropout" in cfg.model else True
    assert make_config(cfg.to_dict()) == cfg  # what a run stores validates to itself


@FUZZ
@given(raw=st.dictionaries(keys, values, max_size=5))
def test_random_nested_mappings(raw):
    outcome(raw, key_names(raw))


@FUZZ
@given(data=st.data(), section_values=st.lists(st.tuples(st.sampled_from(SECTION_KEYS), per_key), max_size=3),
       model=st.sampled_from(sorted(MODELS)))
def test_random_values_for_real_keys(data, section_values, model):
    own = sorted(f.name for f in dataclasses.fields(MODELS[model][1])) or MODEL_KEYS
    model_keys = st.one_of(st.sampled_from(own), st.sampled_from(own), st.sampled_from(MODEL_KEYS))
    model_values = data.draw(st.lists(st.tuples(model_keys, per_key), max_size=3))
    raw: dict = {"model": {"name": model, **dict(model_values)}}
    for dotted, value in section_values:
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    outcome(raw, key_names(raw))


override_keys = st.one_of(st.sampled_from(SECTION_KEYS + [f"model.{k}" for k in MODEL_KEYS] + list(ALIASES)),
                          st.text(max_size=12))
override_values = st.one_of(st.text(max_size=16), st.sampled_from(["[1, 2]", "{a: 1}", "null", ".nan", "-.inf",
                                                                     "1e400", "0x10", "[", "{", "!!binary x",
                                                                     "2020-01-01", "'7'", "yes"]))


@FUZZ
@given(overrides=st.lists(st.one_of(st.text(max_size=20),
                                    st.builds(lambda k, v: f"{k}={v}", override_keys, override_values)),
                          max_size=4))
def test_random_override_strings(overrides):
    try:
        raw = load_raw(None, overrides)
    except SinkrecError as exc:
        assert "\n" not in str(exc) and ("--set" in str(exc) or "=" in str(exc)), str(exc)
        return
    mentioned = key_names(raw) | {part for text in overrides for part in text.split("=", 1)[0].split(".")}
    outcome(raw, mentioned)
