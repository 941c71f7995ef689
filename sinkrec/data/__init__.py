"""Data: readers, the sequence store, leave-one-out split, catalogue, synthetic data, batching."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from . import filters
from .sequences import SequenceStore, Split, build_store, load_store
from .timecheck import timestamp_problems

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    name: str
    store: SequenceStore
    split: Split
    oracle: dict[str, np.ndarray] | None = None  # synthetic only: true next-item probabilities


def resolve_data_file(cfg: DataConfig) -> tuple[Path, str, dict[str, str] | None, str]:
    """(file, reader, column map, display name) for an explicit path, a catalogue name or a file name."""
    from ..errors import SinkrecError
    from .catalog import CATALOG, prepare

    columns = dict(cfg.columns) or None
    if cfg.path is not None:
        path = Path(cfg.path).expanduser()
        name = cfg.dataset if cfg.dataset != "synthetic" else path.stem
        return path, cfg.format, columns, name
    if cfg.dataset in CATALOG:
        info = CATALOG[cfg.dataset]
        path = prepare(cfg.dataset)
        if path.name in info.local_formats:  # a user's copy in another known format (e.g. RecBole's)
            return path, info.local_formats[path.name], columns, cfg.dataset
        fmt = info.format if cfg.format == "auto" else cfg.format
        return path, fmt, columns or dict(info.columns) or None, cfg.dataset
    path = Path(cfg.dataset).expanduser()
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(cfg.dataset, list(CATALOG), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SinkrecError(f"data.dataset '{cfg.dataset}' is neither 'synthetic', a catalogue name{hint} "
                           f"(`sinkrec datasets`) nor an existing file (looked in {Path.cwd()})")
    return path, cfg.format, columns, path.stem


def load_dataset(cfg: DataConfig) -> Dataset:
    """Resolve `cfg.dataset` (synthetic, catalogue name or path) to a split store."""
    if cfg.dataset == "synthetic" and cfg.path is None:
        from .synthetic import generate

        data = generate(cfg.synthetic)
        events = data.events if cfg.min_rating is None else filters.min_rating(data.events, cfg.min_rating)
        store = filters.apply(build_store(events, cfg.min_events), cfg)
        # Map oracle columns from generator item ids to store indices (unseen items drop out).
        columns = np.asarray([0] + [int(i) for i in store.item_ids[1:]], dtype=np.int64)
        oracle = {split: probs[:, columns] for split, probs in data.oracle.items()}
        return Dataset("synthetic", store, Split(store), oracle)
    path, fmt, columns, name = resolve_data_file(cfg)
    store = filters.apply(load_store(path, fmt, columns, cfg.min_events, min_rating=cfg.min_rating), cfg)
    log.info("%s: %d users, %d items, %d events", name, store.n_users, store.n_items, len(store.items))
    problem = timestamp_problems(store.timestamps, store.offsets)
    if problem and store.timestamps is None:
        log.info("%s: %s", name, problem)
    elif problem:
        log.warning("%s: %s", name, problem)
        store.notes.append(problem)
    return Dataset(name, store, Split(store))


__all__ = ["Dataset", "SequenceStore", "Split", "build_store", "load_dataset", "load_store"]
