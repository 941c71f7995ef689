"""Map config names to model classes; each model declares its options as a dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import from_dict
from ..errors import ConfigError

MODELS: dict[str, tuple[type, type]] = {}


def register(name: str, options: type):
    """Class decorator: `@register("sasrec", SASRecConfig)`."""

    def wrap(cls: type) -> type:
        MODELS[name] = (cls, options)
        return cls

    return wrap


def _ensure_loaded() -> None:
    from . import gdn, sasrec, sessa, sinkrec  # noqa: F401  (each registers itself)


def validate_model_options(raw: dict[str, Any]) -> dict[str, Any]:
    """Check `model:` section against the chosen model's options; fill defaults."""
    _ensure_loaded()
    raw = dict(raw)
    name = raw.pop("name", "sasrec")
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(str(name), MODELS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown model '{name}'{hint}; known: {', '.join(sorted(MODELS))}")
    options = from_dict(MODELS[name][1], raw, where="model")
    return {"name": name, **dataclasses.asdict(options)}


def build_model(options: dict[str, Any], n_items: int, max_len: int):
    _ensure_loaded()
    options = validate_model_options(options)
    cls, opt_cls = MODELS[options.pop("name")]
    return cls(n_items=n_items, max_len=max_len, options=opt_cls(**options))
