"""Data: readers, the sequence store, leave-one-out split, catalogue, synthetic data, batching."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from .sequences import SequenceStore, Split, build_store, load_store

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    name: str
    store: SequenceStore
    split: Split
    oracle: dict[str, np.ndarray] | None = None  # synthetic only: true next-item probabilities


def load_dataset(cfg: DataConfig) -> Dataset:
    """Resolve `cfg.dataset` (synthetic, catalogue name or path) to a split store."""
    if cfg.dataset == "synthetic" and cfg.path is None:
        from .synthetic import generate

        data = generate(cfg.synthetic)
        store = build_store(data.events, cfg.min_events)
        # Map oracle columns from generator item ids to store indices (unseen items drop out).
        columns = np.concatenate([[0], store.item_ids[1:].astype(np.int64)])
        oracle = {split: probs[:, columns] for split, probs in data.oracle.items()}
        return Dataset("synthetic", store, Split(store), oracle)
    columns = dict(cfg.columns) or None
    fmt = cfg.format
    if cfg.path is not None:
        path = Path(cfg.path)
        name = cfg.dataset if cfg.dataset != "synthetic" else path.stem
    else:
        from .catalog import CATALOG, prepare

        if cfg.dataset in CATALOG:
            info = CATALOG[cfg.dataset]
            path = prepare(cfg.dataset)
            fmt = info.format if fmt == "auto" else fmt
            columns = columns or dict(info.columns) or None
        else:
            path = Path(cfg.dataset)
            if not path.exists():
                from ..errors import SinkrecError

                raise SinkrecError(f"data.dataset '{cfg.dataset}' is neither 'synthetic', a catalogue "
                                   "name (`sinkrec datasets`) nor an existing file")
        name = cfg.dataset if cfg.dataset in CATALOG else path.stem
    store = load_store(path, fmt, columns, cfg.min_events)
    log.info("%s: %d users, %d items, %d events", name, store.n_users, store.n_items, len(store.items))
    return Dataset(name, store, Split(store))


__all__ = ["Dataset", "SequenceStore", "Split", "build_store", "load_dataset", "load_store"]
