"""An experiment's full config: the schema of `sinkrec.config` plus the chosen model's options.

`config` validates everything except model options and never imports a model; this module adds
the one check that needs the model registry, so each option is validated exactly once, here.
"""

from __future__ import annotations

from typing import Any

from .config import Config, build_config, load_raw
from .models.registry import validate_model_options


def make_config(raw: dict[str, Any]) -> Config:
    """Validate a raw nested mapping (aliases allowed) into a Config whose `model` is complete."""
    cfg = build_config(raw)
    cfg.model = validate_model_options(cfg.model)
    return cfg


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (a path or a name in ./configs), apply `--set` overrides, validate."""
    return make_config(load_raw(path, overrides))
