"""Checkpoint files that load without running code.

A checkpoint is a torch zip archive read with `torch.load(weights_only=True)`: tensors, numbers,
strings and plain containers only, so a crafted file can fail to load but never execute anything.
Two kinds, so that a model to share stays small:

- a *model file* (`model-NNNN.pt`, `best.pt`): weights, config, item ids, data fingerprint — all
  that evaluate / recommend / diagnose need;
- a *state file* (`state-NNNN.pt`): optimizer, scheduler, RNG states, history — for resuming only.

Files of sinkrec < 0.2 were pickles of arbitrary objects; they are refused, not converted (a
conversion would have to unpickle, i.e. trust, the file).
"""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, SinkrecError

MODEL_FORMAT, STATE_FORMAT, VERSION = "sinkrec-model", "sinkrec-state", 2
OLD_FORMAT = ("it holds pickled Python objects, as checkpoints of sinkrec < 0.2 did, and cannot be loaded "
              "safely; retrain with this version (only tensors and plain data are read)")


def plain(value: Any) -> Any:
    """JSON-like Python values (numpy/torch scalars → numbers), tensors kept: what weights_only loads."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and numbers (numpy's and Python's tuples flattened)."""
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_bytes(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def read(path: str | Path, kind: str | None = MODEL_FORMAT) -> dict[str, Any]:
    """A checkpoint's payload, or CheckpointError saying why not. `kind` None: any safe torch archive."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    _check_archive(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler says, the file is not usable
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise CheckpointError(f"{path}: {OLD_FORMAT}") from None
        raise CheckpointError(f"{path}: damaged or not a sinkrec checkpoint ({type(exc).__name__}: "
                              f"{text[:200]})") from None
    if kind is None:
        if not isinstance(payload, dict):
            raise CheckpointError(f"{path}: not a checkpoint (holds {type(payload).__name__}, not a mapping)")
        return payload
    if not isinstance(payload, dict) or payload.get("format") != kind:
        older = isinstance(payload, dict) and "model" in payload and "format" not in payload
        raise CheckpointError(f"{path}: " + (OLD_FORMAT if older else f"not a {kind} file"))
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: {kind} version {payload.get('version')!r}; this sinkrec reads {VERSION}")
    _check_fields(path, payload, kind)
    return payload


def _check_archive(path: Path, data: bytes) -> None:
    """torch's reader skips the zip CRCs: check them here, so a damaged file is an error, not bad weights."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if any(m.compress_type != zipfile.ZIP_STORED or m.file_size > len(data) for m in members):
                raise CheckpointError(f"{path}: not a sinkrec checkpoint (compressed archive members)")
            bad = archive.testzip()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on damaged input
        raise CheckpointError(f"{path}: damaged, truncated or not a sinkrec checkpoint "
                              f"(not a readable torch archive: {type(exc).__name__})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint (checksum mismatch in {bad})")


FIELDS = {MODEL_FORMAT: {"config": dict, "model": dict, "n_items": int, "item_ids": list, "epoch": int,
                         "fingerprint": dict},
          STATE_FORMAT: {"epoch": int, "optimizer": dict, "scheduler": dict, "rng": dict, "best": dict,
                         "bad_epochs": int, "history": list, "train_seconds": float}}


def _check_fields(path: Path, payload: dict[str, Any], kind: str) -> None:
    for key, kind_of in FIELDS[kind].items():
        if not isinstance(payload.get(key), kind_of):
            raise CheckpointError(f"{path}: damaged {kind} file ('{key}' is missing or not a {kind_of.__name__})")
    if kind == MODEL_FORMAT:
        ids = payload["item_ids"]
        if len(ids) != payload["n_items"] + 1 or not all(isinstance(i, str) for i in ids):
            raise CheckpointError(f"{path}: damaged model file (item ids do not match n_items)")
        if not all(isinstance(v, torch.Tensor) for v in payload["model"].values()):
            raise CheckpointError(f"{path}: damaged model file (weights that are not tensors)")


def model_from_checkpoint(payload: dict[str, Any], where: str = "checkpoint"):
    """Rebuild the model (on CPU) and its config from a model file's payload."""
    from ..experiment import make_config
    from ..models import build_model

    try:
        cfg = make_config(payload["config"])
        model = build_model(cfg.model, payload["n_items"], cfg.data.max_len)
    except SinkrecError as exc:
        raise CheckpointError(f"{where}: its config is not valid here ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged config must not surface as a traceback
        raise CheckpointError(f"{where}: cannot build its model ({type(exc).__name__}: {exc})") from None
    load_weights(model, payload["model"], where)
    model.eval()
    return model, cfg


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict, with a mismatch named by key and shape instead of a size-mismatch traceback."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in weights and weights[k].shape != v.shape]
    if missing or extra or shapes:
        detail = (f"{len(shapes)} shape(s) differ, e.g. {shapes[0]} (saved vs this config; was model.d_model "
                  f"or another size changed?)" if shapes else
                  f"missing {missing[:3]}, unexpected {extra[:3]} (another model or version?)")
        raise CheckpointError(f"{where}: the saved weights do not fit the model config: {detail}")
    try:
        model.load_state_dict(weights)
    except Exception as exc:  # noqa: BLE001 - e.g. a dtype that cannot be copied
        raise CheckpointError(f"{where}: cannot load its weights ({type(exc).__name__}: {exc})") from None

