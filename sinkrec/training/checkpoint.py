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

from ..errors import CheckpointError, SinkrecError, cut, env_bytes, shorten

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


# Caps checked before anything is loaded, so a crafted file costs no memory to refuse. The archive
# is not read into memory whole; its pickle (config, ids, structure) is bounded separately since
# unpickled objects take several times their pickled size.
MAX_CHECKPOINT_BYTES = 16 << 30  # SINKREC_MAX_CHECKPOINT_BYTES overrides
MAX_PICKLE_BYTES = 256 << 20  # SINKREC_MAX_CHECKPOINT_PICKLE_BYTES overrides: ~10M item ids


def _limit(name: str, default: int) -> int:
    return env_bytes(name, default, CheckpointError)


def read(path: str | Path, kind: str | None = MODEL_FORMAT) -> dict[str, Any]:
    """A checkpoint's payload, or CheckpointError saying why not. `kind` None: any safe torch archive."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    limit = _limit("SINKREC_MAX_CHECKPOINT_BYTES", MAX_CHECKPOINT_BYTES)
    if size > limit:
        raise CheckpointError(f"{path}: {size} bytes, more than the {limit} a checkpoint may have "
                              "(set SINKREC_MAX_CHECKPOINT_BYTES to allow it)")
    _check_archive(path, size)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler says, the file is not usable
        text = str(exc)[:5000]  # the unpickler may quote names from the file
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise CheckpointError(f"{path}: {OLD_FORMAT}") from None
        raise CheckpointError(f"{path}: damaged or not a sinkrec checkpoint ({type(exc).__name__}: "
                              f"{cut(text, 200)})") from None
    if kind is None:
        if not isinstance(payload, dict):
            raise CheckpointError(f"{path}: not a checkpoint (holds {type(payload).__name__}, not a mapping)")
        return payload
    if not isinstance(payload, dict) or payload.get("format") != kind:
        older = isinstance(payload, dict) and "model" in payload and "format" not in payload
        raise CheckpointError(f"{path}: " + (OLD_FORMAT if older else f"not a {kind} file"))
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: {kind} version {shorten(payload.get('version'))}; this sinkrec reads {VERSION}")
    _check_fields(path, payload, kind)
    return payload


def _check_archive(path: Path, size: int) -> None:
    """Member sizes and CRCs, read from the file in blocks (torch's reader skips the CRCs: a damaged
    file must be an error, not bad weights); the pickle's size is capped before it is unpickled."""
    pickle_limit = _limit("SINKREC_MAX_CHECKPOINT_PICKLE_BYTES", MAX_PICKLE_BYTES)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if any(m.compress_type != zipfile.ZIP_STORED for m in members) or \
                    sum(m.file_size for m in members) > size:
                raise CheckpointError(f"{path}: not a sinkrec checkpoint (compressed archive members)")
            pickled = sum(m.file_size for m in members if m.filename.endswith(".pkl"))
            if pickled > pickle_limit:
                raise CheckpointError(f"{path}: its pickled part has {pickled} bytes, more than the {pickle_limit} "
                                      "allowed (set SINKREC_MAX_CHECKPOINT_PICKLE_BYTES to allow it)")
            bad = archive.testzip()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on damaged input
        raise CheckpointError(f"{path}: damaged, truncated or not a sinkrec checkpoint "
                              f"(not a readable torch archive: {type(exc).__name__})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint (checksum mismatch in {shorten(bad)})")


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
    """Rebuild the model (on CPU) and its config from a model file's payload.

    The weights are checked against the shapes the config implies, taken from the model built on
    the meta device (no memory), before the real model is allocated: a crafted config that asks
    for a huge model fails here instead of exhausting memory.
    """
    from ..experiment import make_config
    from ..models import build_model

    try:
        cfg = make_config(payload["config"])
        with torch.device("meta"):
            expected = build_model(cfg.model, payload["n_items"], cfg.data.max_len).state_dict()
    except SinkrecError as exc:
        raise CheckpointError(f"{where}: its config is not valid here ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged config must not surface as a traceback
        raise CheckpointError(f"{where}: cannot build its model ({type(exc).__name__}: {cut(str(exc))})") from None
    check_weights(expected, payload["model"], where)
    try:
        model = build_model(cfg.model, payload["n_items"], cfg.data.max_len)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{where}: cannot build its model ({type(exc).__name__}: {cut(str(exc))})") from None
    load_weights(model, payload["model"], where)
    model.eval()
    return model, cfg


def check_weights(expected: dict[str, torch.Tensor], weights: dict[str, Any], where: str) -> None:
    """Every saved tensor has the name, shape and dtype the model expects; mismatches named briefly."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{where}: the saved weights do not fit the model config: missing "
                              f"{shorten(missing[:3])}, unexpected {shorten(extra[:3])} (another model or version?)")
    for key, want in expected.items():
        got = weights[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{where}: damaged model file ({shorten(key)} is not a tensor)")
        if got.shape != want.shape:
            n = sum(1 for k, v in expected.items()
                    if isinstance(weights[k], torch.Tensor) and weights[k].shape != v.shape)
            raise CheckpointError(f"{where}: the saved weights do not fit the model config: {n} shape(s) differ, "
                                  f"e.g. {shorten(key)} {shorten(tuple(got.shape))} vs {tuple(want.shape)} (saved vs "
                                  "this config; was model.d_model or another size changed?)")
        if got.dtype != want.dtype:
            raise CheckpointError(f"{where}: {shorten(key)} is saved as {got.dtype}, the model expects {want.dtype}")


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict, with a mismatch named by key and shape instead of a size-mismatch traceback."""
    check_weights(model.state_dict(), weights, where)
    try:
        model.load_state_dict(weights)
    except Exception as exc:  # noqa: BLE001 - e.g. a dtype that cannot be copied
        raise CheckpointError(f"{where}: cannot load its weights ({type(exc).__name__}: {cut(str(exc))})") from None
