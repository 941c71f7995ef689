"""The model table: config name → (model class, options dataclass). Adding a model is one row here."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..config import from_dict
from ..errors import ConfigError
from .base import SequentialRecommender
from .gdn import GDNConfig, GDNRec
from .itemknn import ItemKNN, ItemKNNConfig
from .pop import Pop, PopConfig
from .sasrec import SASRec, SASRecConfig
from .sessa import SessaRec, SessaRecConfig
from .sinkrec import SinkRec, SinkRecConfig

MODELS: dict[str, tuple[type[SequentialRecommender], type]] = {
    "sasrec": (SASRec, SASRecConfig),
    "gdn": (GDNRec, GDNConfig),
    "sinkrec": (SinkRec, SinkRecConfig),
    "sessa": (SessaRec, SessaRecConfig),
    "pop": (Pop, PopConfig),  # fitted by counting (sinkrec compare), no gradient training
    "itemknn": (ItemKNN, ItemKNNConfig),  # item-to-item transitions, fitted by counting
}


def validate_model_options(raw: dict[str, Any]) -> dict[str, Any]:
    """Check a `model:` section against the chosen model's options; fill defaults.

    Returns {"name": ..., every option}: the form stored in a Config and in checkpoints.
    """
    raw = dict(raw)
    name = raw.pop("name", "sasrec")
    if not isinstance(name, str) or name not in MODELS:
        close = difflib.get_close_matches(str(name), MODELS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"model.name: unknown model '{name}'{hint}; known: {', '.join(sorted(MODELS))}")
    try:
        options = from_dict(MODELS[name][1], raw, where="model")
    except ConfigError as exc:  # say whose options these are: keys differ between models
        raise ConfigError(f"{exc} (model '{name}': see `sinkrec config show {name}`)") from None
    return {"name": name, **dataclasses.asdict(options)}


def build_model(options: dict[str, Any], n_items: int, max_len: int) -> SequentialRecommender:
    """Instantiate a model from validated options ({"name": ..., options}); defaults fill omitted keys.

    Options are not checked again here: they come from `validate_model_options` (via
    `sinkrec.experiment.make_config`) or from code that passes well-typed values.
    """
    fields = dict(options)
    name = fields.pop("name", "sasrec")
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; known: {', '.join(sorted(MODELS))}")
    cls, options_cls = MODELS[name]
    return cls(n_items=n_items, max_len=max_len, options=options_cls(**fields))
