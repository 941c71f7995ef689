"""Top-k recommendations for one history, in the user's original item ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .batch import Batch
from .errors import NonFiniteError, SinkrecError, UnknownItemError
from .training import checkpoint, runfolder


class Recommender:
    """A trained model plus its id mapping; `recommend` takes and returns original ids."""

    def __init__(self, model: torch.nn.Module, item_ids: list, max_len: int):
        self.model = model.eval()
        self.item_ids = item_ids
        self.max_len = max_len
        self.lookup = {str(v): i for i, v in enumerate(item_ids) if i > 0}

    @classmethod
    def from_run(cls, path: str | Path) -> Recommender:
        """A run folder (its best epoch, as its metrics.json names it) or a model file.

        Only tensors and plain data are read: a crafted or pre-0.2 (pickled) file is a CheckpointError.
        """
        return cls.load(path)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        payload = runfolder.load_model(path)
        model, cfg = checkpoint.model_from_checkpoint(payload, str(path))
        return cls(model, payload["item_ids"], cfg.data.max_len)

    def encode(self, history: list) -> list[int]:
        out = []
        for position, token in enumerate(history):
            key = str(token).strip()
            if key not in self.lookup:
                example = self.item_ids[1] if len(self.item_ids) > 1 else "?"
                raise UnknownItemError(f"history item {position + 1} ('{key}') is not in the model's "
                                       f"catalogue of {len(self.item_ids) - 1} items (ids look like '{example}')")
            out.append(self.lookup[key])
        return out

    @torch.no_grad()
    def recommend(self, history: list, k: int = 10, exclude_seen: bool = True,
                  timestamps: list[float] | None = None) -> dict[str, list]:
        if not history:
            raise SinkrecError("the history is empty: give at least one item id")
        if k < 1:
            raise SinkrecError(f"k must be ≥ 1, got {k}")
        if timestamps is not None and len(timestamps) != len(history):
            raise SinkrecError(f"{len(timestamps)} timestamps for {len(history)} history items")
        indices = self.encode(history)
        window = indices[-self.max_len:]
        times = None
        if timestamps is not None:
            times = torch.tensor([timestamps[-len(window):]], dtype=torch.float64)
        batch = Batch(items=torch.tensor([window]), lengths=torch.tensor([len(window)]), timestamps=times)
        return self.top_k(self.model.score_users(batch)[0], indices if exclude_seen else [], k)

    def top_k(self, scores: torch.Tensor, exclude: list[int], k: int) -> dict[str, list]:
        if not bool(torch.isfinite(scores[1:]).all()):
            bad = int((~torch.isfinite(scores[1:])).sum())
            raise NonFiniteError(f"the model scored {bad} of {len(scores) - 1} items NaN or inf: its weights are "
                                 f"damaged or its training diverged; retrain (e.g. with a lower train.lr)")
        scores = scores.clone()
        scores[0] = float("-inf")
        if exclude:
            scores[torch.tensor(exclude)] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, k)
        items = [self.item_ids[i] for i in top.indices.tolist()]
        return {"items": [i.item() if isinstance(i, np.generic) else i for i in items],
                "scores": top.values.tolist()}

    def session(self) -> Session:
        return Session(self)


class Session:
    """A growing history: each `add` feeds only the new events (recurrent models keep their state).

    Models without a streaming path recompute the last `max_len` events on each `add`. A streaming
    session sees the whole history, not only the last `max_len` events.
    """

    def __init__(self, recommender: Recommender):
        self.rec = recommender
        model = recommender.model
        self.cache = model.new_cache() if model.supports_streaming else None
        self.indices: list[int] = []
        self.times: list[float] = []
        self.scores: torch.Tensor | None = None

    @torch.no_grad()
    def add(self, items: list, timestamps: list[float] | None = None) -> None:
        if not items:
            raise SinkrecError("add() needs at least one item id")
        if timestamps is not None and len(timestamps) != len(items):
            raise SinkrecError(f"{len(timestamps)} timestamps for {len(items)} items")
        new = self.rec.encode(items)
        self.indices += new
        self.times += list(timestamps or [])
        model = self.rec.model
        if self.cache is not None:
            times = torch.tensor([timestamps], dtype=torch.float64) if timestamps is not None else None
            hidden = model.encode_step(torch.tensor([new]), self.cache, times)
            self.scores = model.item_scores(hidden[:, -1]).float()[0]
        else:
            window = self.indices[-self.rec.max_len:]
            times = torch.tensor([self.times[-len(window):]], dtype=torch.float64) if self.times else None
            batch = Batch(items=torch.tensor([window]), lengths=torch.tensor([len(window)]), timestamps=times)
            self.scores = model.score_users(batch)[0]

    def recommend(self, k: int = 10, exclude_seen: bool = True) -> dict[str, list]:
        if self.scores is None:
            raise SinkrecError("the history is empty: add() items first")
        return self.rec.top_k(self.scores, self.indices if exclude_seen else [], k)


def recommend_from_checkpoint(path: str | Path, history: list, k: int = 10, exclude_seen: bool = True,
                              timestamps: str | None = None) -> dict[str, list]:
    times = None
    if timestamps:
        try:
            times = [float(t) for t in timestamps.split(",") if t.strip()]
        except ValueError:
            raise SinkrecError(f"--timestamps must be comma-separated numbers, got '{timestamps}'") from None
    return Recommender.load(path).recommend(history, k, exclude_seen, times)
