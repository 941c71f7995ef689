"""The counting baselines (pop, itemknn) fitted on a run's training split and scored like any model.

`sinkrec train` prints them beside the trained model and `sinkrec compare` runs them as jobs of
their own: both go through `fit_and_score`, so a baseline's numbers never depend on which
command produced them. They need no gradients; fitting is one pass over the training events.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

NAMES = ("pop", "itemknn")


def training_sequences(split) -> list[np.ndarray]:
    """Each user's training events (the part before the validation target)."""
    store = split.store
    return [store.items[store.offsets[u]: split.train_end(u)] for u in range(store.n_users)]


def fit_and_score(model_options: dict[str, Any], data, cfg, device: Any = "cpu") -> dict[str, Any]:
    """Fit one counting baseline on `data`'s training split; its valid and test metrics and fit time.

    `cfg` supplies the protocol (eval settings, data.max_len); `model_options` the baseline.
    """
    from ..eval.evaluate import evaluate
    from ..models import build_model

    started = time.perf_counter()
    model = build_model(model_options, data.store.n_items, cfg.data.max_len).fit(training_sequences(data.split))
    seconds = time.perf_counter() - started
    model = model.to(device)
    return {"valid": evaluate(model, data.split, "valid", cfg.eval, cfg.data.max_len, device),
            "test": evaluate(model, data.split, "test", cfg.eval, cfg.data.max_len, device),
            "fit_seconds": round(seconds, 2)}


def score_all(data, cfg, device: Any = "cpu") -> dict[str, dict[str, Any]]:
    """Every counting baseline at its default options, by name."""
    from ..models.registry import validate_model_options

    return {name: fit_and_score(validate_model_options({"name": name}), data, cfg, device) for name in NAMES}


def below_floor(test: dict[str, float], baselines: dict[str, dict[str, Any]], metric: str) -> str | None:
    """A one-line warning when the trained model scores at or below popularity on `metric`, else None."""
    pop = (baselines.get("pop") or {}).get("test") or {}
    if metric not in pop or metric not in test or test[metric] > pop[metric]:
        return None
    return (f"the trained model's test {metric} {test[metric]:.4f} is at or below popularity's {pop[metric]:.4f}: "
            "it has learned nothing beyond item counts (train longer, lower train.batch_size, or see "
            "`sinkrec compare`)")
