"""An experiment's full config: the schema of `sinkrec.config` plus the chosen model's options.

`config` validates everything except model options and never imports a model; this module adds
the one check that needs the model registry, so each option is validated exactly once, here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from .config import Config, build_config, load_raw
from .errors import ConfigError
from .models.registry import validate_model_options


def make_config(raw: dict[str, Any]) -> Config:
    """Validate a raw nested mapping (aliases allowed) into a Config whose `model` is complete."""
    cfg = build_config(raw)
    cfg.model = validate_model_options(cfg.model)
    return cfg


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (a path or a name in ./configs), apply `--set` overrides, validate."""
    return make_config(load_raw(path, overrides))


def check_device(name: str) -> None:
    """CUDA asked for on a machine without a GPU (or without that GPU) is a one-line ConfigError."""
    if not name.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was asked for but no CUDA GPU is available here "
                          "(use --device cpu / train.device=cpu, or auto)")
    if name[5:].isdigit() and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def check_output_dir(path: str | Path) -> None:
    """A run folder that cannot be written is an error at start, not after the first epoch."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output_dir '{folder}' exists and is not a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output_dir '{folder}' cannot be created: '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir '{folder}' is not writable (no write permission on '{existing}')")


def check_environment(cfg: Config) -> None:
    """What a training config asks of this machine, checked before any data is read: the device
    exists, the output folder can be written, optional packages it needs are installed."""
    check_device(cfg.train.device)
    check_output_dir(cfg.output_dir)
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard is on but the tensorboard package is not installed: "
                          "pip install 'sinkrec[tensorboard]' (or set train.tensorboard=false)")
