"""What a checkpoint was trained on, and which config keys may change when a run is resumed.

A model scores item *indices*; the id map turns them into the user's ids. If the data file changes
(items renumbered, events added), an old model silently scores the wrong items. So checkpoints
carry a fingerprint of their data, and loading one against other data is refused with a message
saying what differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import CheckpointError
from ..hashing import file_digest

# Config keys that may differ on `--resume`: they change how long or where a run trains, or how it
# reports, not what it computes. `data.dataset`/`data.path`/`output_dir` say where files are; the
# data fingerprint still refuses different data. Every other changed key refuses the resume.
SAFE_ON_RESUME = ("train.epochs", "train.patience", "train.progress", "train.tensorboard", "train.device",
                  "eval.batch_size", "output_dir", "data.dataset", "data.path")
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    """sha256 of a data file, remembered per (path, size, mtime) within a process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def data_fingerprint(cfg: DataConfig, store) -> dict[str, str]:
    """{source, options, items}: file digest (or generator options), preprocessing options, id-map digest."""
    options = {"format": cfg.format, "columns": dict(cfg.columns), "min_events": cfg.min_events}
    if cfg.dataset == "synthetic" and cfg.path is None:
        synthetic = json.dumps(_as_dict(cfg.synthetic), sort_keys=True)
        source = "synthetic:" + hashlib.sha256(synthetic.encode()).hexdigest()[:16]
    else:
        from ..data import resolve_data_file

        source = "sha256:" + _digest(resolve_data_file(cfg)[0])
    items = hashlib.sha256("\n".join(str(i) for i in store.item_ids).encode()).hexdigest()
    return {"source": source, "options": json.dumps(options, sort_keys=True),
            "items": f"sha256:{items} ({store.n_items} items, {store.n_users} users)"}


def _as_dict(value: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def check_data(saved: dict[str, str], current: dict[str, str], where: str, action: str) -> None:
    """Refuse `action` when the data's fingerprint differs from the checkpoint's; say what differs."""
    names = {"source": "the data file's content", "options": "the preprocessing options",
             "items": "the item id map"}
    diffs = [f"{names.get(k, k)} ({_short(saved.get(k))} → {_short(current.get(k))})"
             for k in names if saved.get(k) != current.get(k)]
    if diffs:
        raise CheckpointError(f"{where} was trained on other data: {'; '.join(diffs)} differ; refusing to "
                              f"{action} (an old model on changed data scores the wrong items)")


def _short(value: str | None) -> str:
    if value is None:
        return "none"
    return value if len(value) <= 40 or not value.startswith(("sha256:", "synthetic:")) else value[:19] + "…" \
        + value.partition(" ")[2]


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "data.columns":
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key (old → new)' for every key that differs and is not in SAFE_ON_RESUME."""
    old, new = flatten(saved), flatten(current)
    return [f"{k} ({old.get(k, '(unset)')!r} → {new.get(k, '(unset)')!r})" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in SAFE_ON_RESUME]


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    changes = config_changes(saved, current)
    if changes:
        raise CheckpointError(f"cannot resume {where}: the config differs from the run's in {', '.join(changes)}; "
                              f"only {', '.join(SAFE_ON_RESUME)} may change on resume; start a new run instead "
                              f"(drop --resume, or pick another --output)")
