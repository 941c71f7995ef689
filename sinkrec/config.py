"""Experiment configuration: dataclasses, YAML loading, `--set` overrides and validation.

A config has four sections (data, model, train, eval) plus `output_dir`. Model options live in
each model's own dataclass (see `sinkrec.models.registry`), so a typo in any key is an error
that names the key and suggests the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class SyntheticConfig:
    """Knobs of the built-in "state sink" generator (spec/sinkrec.md §5)."""

    n_users: int = 1000
    n_items: int = 500
    n_clusters: int = 20
    min_len: int = 40
    max_len: int = 120
    n_routines: int = 60
    routine_len: int = 3
    favourites: int = 3
    routine_share: float = 0.5
    drift_rate: float = 0.05
    # share of non-routine items drawn from a random cluster instead of the interest: with noise,
    # one item no longer names the interest, so it must be pooled over many items across routines
    interest_noise: float = 0.0
    seed: int = 0


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # "synthetic", a catalogue name (`sinkrec datasets`), or a file path
    path: str | None = None  # explicit file; overrides the catalogue's cached file
    format: str = "auto"  # reader name, see sinkrec.data.formats.READERS
    columns: dict[str, str] = field(default_factory=dict)  # generic csv/parquet: user, item, timestamp
    max_len: int = 200  # MAX_ITEM_LIST_LENGTH: most recent events fed to the model
    min_events: int = 3  # users with fewer events are dropped (and counted)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine (both after linear warm-up)
    warmup_steps: int = 0
    grad_clip: float = 1.0  # 0 disables clipping
    loss: str = "ce"  # ce (full softmax) | sampled
    negatives: str = "uniform"  # sampled softmax negatives: uniform | in-batch
    n_negatives: int = 256
    patience: int = 5  # early stopping on the validation metric; 0 disables
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # bf16 autocast on CUDA
    compile: bool = False  # torch.compile the training forward (widths rounded to 64: few shapes)
    compile_mode: str = "default"  # torch.compile mode; reduce-overhead adds CUDA graphs (fastest on GPU)
    tensorboard: bool = False
    progress: bool = True


@dataclass
class EvalConfig:
    topk: list[int] = field(default_factory=lambda: [10, 20, 50])
    filter_seen: bool = True
    valid_metric: str = "ndcg@10"
    batch_size: int = 256


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "sasrec"})
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# RecBole-style names users already know, mapped to our keys.
ALIASES = {
    "MAX_ITEM_LIST_LENGTH": "data.max_len",
    "topk": "eval.topk",
    "valid_metric": "eval.valid_metric",
    "learning_rate": "train.lr",
    "epochs": "train.epochs",
    "train_batch_size": "train.batch_size",
    "eval_batch_size": "eval.batch_size",
    "seed": "train.seed",
}


def _suggest(key: str, options: typing.Iterable[str]) -> str:
    options = list(options)
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    close = close or sorted((o for o in options if o in key or key in o), key=len, reverse=True)[:1]
    return f"; did you mean '{close[0]}'?" if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type, naming the key on failure."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are errors with a suggestion."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{where}.{key}'{_suggest(key, fields)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _expand_aliases(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ALIASES:
            out = merge(out, _nest(ALIASES[key], value))
        else:
            out = merge(out, {key: value})
    return out


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    parts = dotted.split(".")
    node: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        node = {part: node}
    return node


def parse_override(text: str) -> dict[str, Any]:
    """`train.lr=3e-4` → {"train": {"lr": 0.0003}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = ALIASES.get(key.strip(), key.strip())
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value '{raw}' is not valid YAML: {exc}") from None
    return _nest(key, value)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def resolve_config_path(name: str) -> Path:
    """A path, or a bare name looked up in ./configs/NAME.yaml."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = Path("configs") / f"{name}.yaml"
    if candidate.exists():
        return candidate
    raise ConfigError(f"config '{name}' not found (looked for {path} and {candidate})")


def build_config(raw: dict[str, Any]) -> Config:
    """Validate a raw nested mapping (after aliases) into a Config, model options included."""
    raw = _expand_aliases(raw)
    model = raw.pop("model", {}) or {}
    cfg = from_dict(Config, raw)
    from .models.registry import validate_model_options  # late: models import torch

    cfg.model = validate_model_options(model)
    return cfg


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    raw: dict[str, Any] = {}
    if path:
        raw = load_yaml(resolve_config_path(path))
    for text in overrides or []:
        raw = merge(_expand_aliases(raw), parse_override(text))
    return build_config(raw)
