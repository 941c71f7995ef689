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

from .checks import (
    PROBABILITY,
    Checked,
    OptionError,
    Rule,
    above,
    at_least,
    closest,
    nonempty,
    one_of,
    option,
    show,
)
from .errors import ConfigError, cut, env_bytes, shorten

SCHEDULES = ("constant", "cosine")
LOSSES = ("ce", "sampled")
NEGATIVES = ("uniform", "in-batch")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE = one_of(*COMPILE_MODES)
P = PROBABILITY  # in [0, 1]
NAME = nonempty()
SEED = Rule("an integer in [0, 2**63 - 1]", lambda v: isinstance(v, int) and 0 <= v < 2**63)  # numpy's and torch's
DEVICE = Rule("auto, cpu, cuda or cuda:N",
              lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit() and v[5:].isascii()))


@dataclass
class SyntheticConfig(Checked):
    """Knobs of the built-in "state sink" generator (spec/sinkrec.md §5)."""

    n_users: int = option(1000, at_least(1))  # users to generate
    n_items: int = option(500, at_least(2))  # catalogue size
    n_clusters: int = option(20, at_least(1))  # interest clusters the items are split into
    min_len: int = option(40, at_least(1))  # shortest history
    max_len: int = option(120, at_least(1))  # longest history (≥ min_len)
    n_routines: int = option(60, at_least(1))  # shared repetitive item sequences (the "sink" patterns)
    routine_len: int = option(3, at_least(1))  # items per routine
    favourites: int = option(3, at_least(1))  # routines each user prefers (≤ n_routines)
    routine_share: float = option(0.5, P)  # chance that a step plays a favourite routine instead of an interest item
    drift_rate: float = option(0.05, P)  # chance per transition that the interest drifts to a nearby cluster
    interest_noise: float = option(0.0, P)  # share of non-routine items from a random cluster (interest must be pooled)
    seed: int = option(0, SEED)  # generator seed

    def check(self) -> None:
        if self.max_len < self.min_len:
            raise OptionError("max_len", f"must be ≥ min_len ({self.min_len}), got {self.max_len}")
        if self.favourites > self.n_routines:
            raise OptionError("favourites", f"must be ≤ n_routines ({self.n_routines}), got {self.favourites}")
        interest_items = self.n_items - max(self.routine_len, self.n_items // 5)  # as in data.synthetic
        if interest_items < self.n_clusters:
            raise OptionError("n_clusters", f"must be ≤ the {interest_items} non-routine items of n_items "
                                            f"({self.n_items}), got {self.n_clusters}")


def _reader_names() -> tuple[str, ...]:
    """The readers' names, from where they are declared (imported only when a format is named)."""
    from .data.formats import READERS

    return ("auto", *READERS)


COLUMN_KEYS = ("user", "item", "timestamp", "rating")


@dataclass
class DataConfig(Checked):
    dataset: str = option("synthetic", NAME)  # "synthetic", a catalogue name (`sinkrec datasets`), or a file path
    path: str | None = None  # explicit file; overrides the catalogue's cached file
    format: str = "auto"  # auto, or a reader name of sinkrec.data.formats.READERS (csv, jsonl, sasrec, …)
    columns: dict[str, str] = field(default_factory=dict)  # generic csv/parquet: user, item, timestamp
    max_len: int = option(200, at_least(1))  # MAX_ITEM_LIST_LENGTH: most recent events fed to the model
    min_events: int = option(3, at_least(1))  # users with fewer events are dropped (and counted)
    min_rating: float | None = None  # drop events rated below this, before anything else (needs a rating column)
    dedup_repeats: bool = False  # collapse consecutive repeats of one item in a history into one event
    k_core: int = option(0, at_least(0))  # keep users and items with ≥ k events, iterated to a fixed point; 0 off
    split: str = option("leave-one-out", one_of("leave-one-out", "temporal"))  # leave-one-out | temporal (global cuts)
    split_times: list[float] = field(default_factory=lambda: [0.8, 0.9])  # temporal: t1 < t2 (unix times or quantiles)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # used when dataset is "synthetic"

    def check(self) -> None:
        if self.path is not None and not str(self.path).strip():
            raise OptionError("path", "must be a file path or null, got ''")
        if self.format != "auto" and self.format not in _reader_names():
            raise OptionError("format", f"must be one of {' | '.join(_reader_names())}, got {show(self.format)}"
                                        f"{closest(self.format, _reader_names())}")
        for key, name in self.columns.items():
            if key not in COLUMN_KEYS:
                raise OptionError("columns", f"keys must be {', '.join(COLUMN_KEYS)}, got {show(key)}")
            if isinstance(name, bool) or not (isinstance(name, str) and name.strip()
                                              or isinstance(name, int) and name >= 0):
                raise OptionError(f"columns.{key}", f"must be a column name or a 0-based index, got {show(name)}")


@dataclass
class TrainConfig(Checked):
    epochs: int = option(20, at_least(1))  # most epochs to train
    batch_size: int = option(128, at_least(1))  # users per training batch (global, across ranks)
    lr: float = option(1e-3, above(0))  # AdamW learning rate
    weight_decay: float = option(0.0, at_least(0))  # AdamW weight decay
    schedule: str = option("constant", one_of(*SCHEDULES))  # constant | cosine (both after linear warm-up)
    warmup_steps: int = option(0, at_least(0))  # linear warm-up steps
    grad_clip: float = option(1.0, at_least(0))  # 0 disables clipping
    loss: str = option("ce", one_of(*LOSSES))  # ce (full softmax) | sampled
    negatives: str = option("uniform", one_of(*NEGATIVES))  # sampled softmax negatives: uniform | in-batch
    n_negatives: int = option(256, at_least(1))  # negatives per batch for sampled softmax
    patience: int = option(5, at_least(0))  # early stopping on the validation metric; 0 disables
    seed: int = option(0, SEED)  # seeds weights and shuffling
    device: str = option("auto", DEVICE)  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # bf16 autocast on CUDA
    compile: bool = False  # torch.compile the training forward (widths rounded to 64: few shapes)
    compile_mode: str = option("default", COMPILE)  # torch.compile mode; reduce-overhead adds CUDA graphs (fastest)
    tensorboard: bool = False  # write TensorBoard logs under output_dir/tensorboard (needs sinkrec[tensorboard])
    progress: bool = True  # show a progress bar per epoch


def valid_metrics(topk: list[int]) -> list[str]:
    """The metrics evaluation computes for these cut-offs (the names `eval.valid_metric` may take)."""
    return ["mrr"] + [f"{m}@{k}" for k in topk for m in ("hr", "ndcg")]


@dataclass
class EvalConfig(Checked):
    topk: list[int] = field(default_factory=lambda: [10, 20, 50])  # cut-offs K of HR@K and NDCG@K (each ≥ 1)
    filter_seen: bool = True  # exclude items of the input history from the ranking
    valid_metric: str = "ndcg@10"  # model selection and early stopping metric: mrr, hr@K or ndcg@K, K in topk
    batch_size: int = option(256, at_least(1))  # users per evaluation batch

    def check(self) -> None:
        if not self.topk:
            raise OptionError("topk", "must list at least one cut-off, got []")
        for k in self.topk:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise OptionError("topk", f"must hold integers ≥ 1, got {show(k)}")
        names = valid_metrics(self.topk)
        metric = self.valid_metric
        if metric not in names:
            base, _, k = metric.lower().partition("@")
            if base in ("hr", "ndcg") and k.isdigit() and int(k) >= 1 and f"{base}@{int(k)}" not in names:
                hint = f" (add {int(k)} to eval.topk to select on it)"
            else:
                hint = closest(metric, names)
            raise OptionError("valid_metric", f"must be a metric computed for eval.topk {self.topk} "
                                              f"({', '.join(names)}), got {show(metric)}{hint}")


@dataclass
class Config(Checked):
    data: DataConfig = field(default_factory=DataConfig)  # what to train on
    model: dict[str, Any] = field(default_factory=lambda: {"name": "sasrec"})  # "name" + that model's options
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation and the training loop
    eval: EvalConfig = field(default_factory=EvalConfig)  # full-ranking evaluation
    output_dir: str = option("runs/default", nonempty())  # checkpoints and metrics.json go here

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


# Other libraries' names (and sibling models' names) for our keys: a hint when no spelling is close.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "n_layers": ("n_blocks",), "n_blocks": ("n_layers",), "num_layers": ("n_layers", "n_blocks"),
    "layers": ("n_layers", "n_blocks"), "num_blocks": ("n_blocks", "n_layers"), "depth": ("n_layers", "n_blocks"),
    "num_heads": ("n_heads",), "heads": ("n_heads",), "n_head": ("n_heads",), "num_attention_heads": ("n_heads",),
    "hidden_size": ("d_model",), "hidden_dim": ("d_model",), "embedding_size": ("d_model",), "dim": ("d_model",),
    "emb_dim": ("d_model",), "embed_dim": ("d_model",), "d_embed": ("d_model",), "width": ("d_model",),
    "dropout_prob": ("dropout",), "hidden_dropout_prob": ("dropout",), "attn_dropout_prob": ("dropout",),
    "dropout_rate": ("dropout",), "learning_rate": ("lr",), "max_seq_length": ("max_len",),
    "max_seq_len": ("max_len",), "seq_len": ("max_len",), "max_length": ("max_len",),
    "num_epochs": ("epochs",), "n_epochs": ("epochs",), "train_batch_size": ("batch_size",),
    "eval_batch_size": ("batch_size",), "window_size": ("window",), "num_negatives": ("n_negatives",),
    "loss_type": ("loss",), "inner_size": ("ffn_mult",), "clip_grad_norm": ("grad_clip",),
    "stopping_step": ("patience",), "warmup": ("warmup_steps",), "metric": ("valid_metric",),
}


def _tokens(name: str) -> set[str]:
    return {t for t in name.lower().replace("-", "_").split("_") if len(t) > 1}


def _suggest(key: str, options: typing.Iterable[str]) -> str:
    """A hint for an unknown key that never misleads: a close spelling, a known synonym, or a key
    sharing a whole word with it; otherwise the valid keys themselves."""
    options = sorted(options)
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.75)
    close = close or [o for o in SYNONYMS.get(key.lower(), ()) if o in options][:1]
    if close:
        return f"; did you mean '{close[0]}'?"
    words = _tokens(key)
    related = [o for o in options if words and (_tokens(o) <= words or words <= _tokens(o)) and _tokens(o)]
    if len(related) == 1:
        return f"; did you mean '{related[0]}'?"
    if 1 < len(related) <= 3:
        return "; did you mean one of " + ", ".join(f"'{o}'" for o in related) + "?"
    return f"; valid keys: {', '.join(options)}"


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type, naming the key on failure."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {show(value)}")
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
            raise ConfigError(f"{where}: expected a mapping, got {show(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {show(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {show(value)}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {show(value)}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {show(value)}")
        try:
            return float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where}: expected a number, got {show(value)}") from None
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {show(value)}")
        try:
            return str(value)
        except ValueError:  # an int with more digits than Python prints
            raise ConfigError(f"{where}: expected a string, got {show(value)}") from None
    return value


def from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a mapping: unknown keys get a hint, values are type- and range-checked
    (see `sinkrec.checks`); every error names the key as `where.key`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {show(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(f"unknown key '{_join(where, key)}'{_suggest(str(key), fields)}")
        kwargs[key] = _coerce(value, hints[key], _join(where, key))
    try:
        return cls(**kwargs)
    except OptionError as exc:
        raise ConfigError(f"{_join(where, exc.key)} {exc.problem}") from None


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


# A config is a few hundred values: these bounds only stop crafted files (a YAML alias "billion
# laughs" loads as a small graph of shared lists but expands exponentially once walked).
MAX_CONFIG_BYTES = 1 << 20  # SINKREC_MAX_CONFIG_BYTES overrides
MAX_CONFIG_VALUES = 100_000  # values counted as if every alias were written out
MAX_CONFIG_DEPTH = 32


def max_config_bytes() -> int:
    return env_bytes("SINKREC_MAX_CONFIG_BYTES", MAX_CONFIG_BYTES, ConfigError)


def check_structure(value: Any, where: str = "config") -> None:
    """Refuse a value nested deeper than MAX_CONFIG_DEPTH, referring to itself, or holding more than
    MAX_CONFIG_VALUES values once aliases (shared lists and mappings) are expanded.

    Shared nodes are counted once each and multiplied by their uses, so the check itself stays
    linear in the loaded graph, whatever it expands to.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list, tuple)):
            return 1
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_CONFIG_DEPTH} levels deep")
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{where}: a value contains itself (a recursive YAML alias)")
        active.add(key)
        children = [v for pair in node.items() for v in pair] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(f"{where}: more than {MAX_CONFIG_VALUES} values once its YAML aliases are "
                                  "expanded (an alias bomb?)")
        active.discard(key)
        sizes[key] = total
        return total

    size(value, 0)


def _safe_load(text: str, where: str) -> Any:
    """yaml.safe_load (plain data only: no tags that build objects), then `check_structure`."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ConfigError(f"{where}: not valid YAML: {cut(str(exc))}") from None
    check_structure(value, where)
    return value


def parse_override(text: str) -> dict[str, Any]:
    """`train.lr=3e-4` → {"train": {"lr": 0.0003}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {shorten(text)}")
    key, raw = text.split("=", 1)
    key = ALIASES.get(key.strip(), key.strip())
    if len(raw) > max_config_bytes():
        raise ConfigError(f"--set {shorten(key)}: value of {len(raw)} characters is longer than a config file may be")
    value = _safe_load(raw, f"--set {shorten(key)}") if raw.strip() else ""
    return _nest(key, value)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping; its size is checked before it is read (SINKREC_MAX_CONFIG_BYTES)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    limit = max_config_bytes()
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {cut(str(exc))}") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit} bytes, too large for a config file "
                          "(set SINKREC_MAX_CONFIG_BYTES to allow it)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    raw = _safe_load(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def resolve_config_path(name: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (`sinkrec config list`), from any working directory."""
    from . import configs

    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = configs.locate(str(name))
    if shipped is not None:
        return shipped
    close = difflib.get_close_matches(str(name), configs.names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"config '{name}' is neither a file nor a shipped config{hint} (see `sinkrec config list`)")


def build_config(raw: dict[str, Any]) -> Config:
    """Validate a raw nested mapping (after aliases) into a Config.

    The model section is only checked to be a mapping with a name: its options belong to the
    model registry, which this module must not import (`sinkrec.experiment.make_config` does both).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping, got {show(raw)}")
    check_structure(raw)  # e.g. a checkpoint's config: a pickle can share lists like YAML aliases
    raw = _expand_aliases(raw)
    model = raw.pop("model", None)
    model = {} if model is None else model
    if not isinstance(model, dict):
        raise ConfigError(f"model: expected a mapping, got {show(model)}")
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
