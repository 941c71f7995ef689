"""Experiment configuration: dataclasses, YAML loading, `--set` overrides and validation.

A config has four sections (data, model, train, eval) plus `output_dir`. Model options live in
each model's own dataclass (see `sinkrec.models.registry`) and are checked by
`sinkrec.experiment.make_config`, so this schema never imports a model. A typo in any key is an
error that names the key and suggests the closest valid one.
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

    n_users: int = 1000  # users to generate
    n_items: int = 500  # catalogue size
    n_clusters: int = 20  # interest clusters the items are split into
    min_len: int = 40  # shortest history
    max_len: int = 120  # longest history
    n_routines: int = 60  # shared repetitive item sequences (the "sink" patterns)
    routine_len: int = 3  # items per routine
    favourites: int = 3  # routines each user prefers
    routine_share: float = 0.5  # chance that a step plays a favourite routine instead of an interest item
    drift_rate: float = 0.05  # chance per transition that the interest drifts to a nearby cluster
    interest_noise: float = 0.0  # share of non-routine items from a random cluster (interest must be pooled)
    seed: int = 0  # generator seed


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # "synthetic", a catalogue name (`sinkrec datasets`), or a file path
    path: str | None = None  # explicit file; overrides the catalogue's cached file
    format: str = "auto"  # reader name, see sinkrec.data.formats.READERS
    columns: dict[str, str] = field(default_factory=dict)  # generic csv/parquet: user, item, timestamp
    max_len: int = 200  # MAX_ITEM_LIST_LENGTH: most recent events fed to the model
    min_events: int = 3  # users with fewer events are dropped (and counted)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # used when dataset is "synthetic"


@dataclass
class TrainConfig:
    epochs: int = 20  # most epochs to train
    batch_size: int = 128  # users per training batch (global, across ranks)
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    schedule: str = "constant"  # constant | cosine (both after linear warm-up)
    warmup_steps: int = 0  # linear warm-up steps
    grad_clip: float = 1.0  # 0 disables clipping
    loss: str = "ce"  # ce (full softmax) | sampled
    negatives: str = "uniform"  # sampled softmax negatives: uniform | in-batch
    n_negatives: int = 256  # negatives per batch for sampled softmax
    patience: int = 5  # early stopping on the validation metric; 0 disables
    seed: int = 0  # seeds weights and shuffling
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # bf16 autocast on CUDA
    compile: bool = False  # torch.compile the training forward (widths rounded to 64: few shapes)
    compile_mode: str = "default"  # torch.compile mode; reduce-overhead adds CUDA graphs (fastest on GPU)
    tensorboard: bool = False  # write TensorBoard logs under output_dir/tensorboard
    progress: bool = True  # show a progress bar per epoch


@dataclass
class EvalConfig:
    topk: list[int] = field(default_factory=lambda: [10, 20, 50])  # cut-offs K of HR@K and NDCG@K
    filter_seen: bool = True  # exclude items of the input history from the ranking
    valid_metric: str = "ndcg@10"  # model selection and early stopping metric
    batch_size: int = 256  # users per evaluation batch


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)  # what to train on
    model: dict[str, Any] = field(default_factory=lambda: {"name": "sasrec"})  # "name" + that model's options
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation and the training loop
    eval: EvalConfig = field(default_factory=EvalConfig)  # full-ranking evaluation
    output_dir: str = "runs/default"  # checkpoints and metrics.json go here

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
    """Validate a raw nested mapping (after aliases) into a Config.

    The model section is only checked to be a mapping with a name: its options belong to the
    model registry, which this module must not import (`sinkrec.experiment.make_config` does both).
    """
    raw = _expand_aliases(raw)
    model = raw.pop("model", None) or {}
    if not isinstance(model, dict):
        raise ConfigError(f"config.model: expected a mapping, got {model!r}")
    cfg = from_dict(Config, raw)
    cfg.model = {"name": "sasrec", **model}
    return cfg


def load_raw(path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The YAML file (a path or a name in ./configs) merged with `--set` overrides, not yet validated."""
    raw: dict[str, Any] = {}
    if path:
        raw = load_yaml(resolve_config_path(path))
    for text in overrides or []:
        raw = merge(_expand_aliases(raw), parse_override(text))
    return raw
