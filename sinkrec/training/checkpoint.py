"""Checkpoints carry everything needed to evaluate, recommend and resume exactly."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SinkrecError
from ..experiment import make_config
from ..models import build_model


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write, so an interrupted save never leaves a broken checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise SinkrecError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise SinkrecError(f"{path}: not a sinkrec checkpoint ({exc})") from None
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise SinkrecError(f"{path}: not a sinkrec checkpoint (missing config/model)")
    return payload


def model_from_checkpoint(payload: dict[str, Any]):
    """Rebuild the model (on CPU) and its config from a loaded checkpoint."""
    cfg = make_config(payload["config"])
    model = build_model(cfg.model, payload["n_items"], cfg.data.max_len)
    model.load_state_dict(payload["model"])
    model.eval()
    return model, cfg
