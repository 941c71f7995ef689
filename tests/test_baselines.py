"""pop and itemknn: fitted by counting, scored by the same full-ranking evaluator."""

import numpy as np
import pytest
import torch

from sinkrec.batch import Batch
from sinkrec.config import EvalConfig
from sinkrec.data.formats import Interactions
from sinkrec.data.sequences import Split, build_store
from sinkrec.errors import ConfigError
from sinkrec.eval.evaluate import evaluate
from sinkrec.models import build_model


def test_pop_ranks_by_training_counts():
    model = build_model({"name": "pop"}, n_items=4, max_len=10).fit([np.array([1, 2, 2]), np.array([2, 3])])
    scores = model.score_users(Batch(items=torch.tensor([[1, 0]]), lengths=torch.tensor([1])))
    assert scores.shape == (1, 5) and scores[0].tolist() == [0, 1, 3, 1, 0]


def test_itemknn_scores_the_usual_successor_first():
    model = build_model({"name": "itemknn", "history": 1, "shrink": 0.0}, n_items=5, max_len=10)
    model.fit([np.array([1, 2, 3]), np.array([1, 2, 4]), np.array([5, 5, 5, 5])])
    scores = model.score_users(Batch(items=torch.tensor([[3, 1]]), lengths=torch.tensor([2])))[0]
    assert scores[1:].argmax().item() + 1 == 2  # after item 1 comes item 2
    assert scores[5] > 0 and scores[5] < 1e-5  # item 5 only through the popularity tie-break


def test_fitted_models_refuse_gradient_training():
    with pytest.raises(ConfigError, match="fitted by counting"):
        build_model({"name": "pop"}, n_items=3, max_len=5).encode(Batch(items=torch.ones(1, 1, dtype=torch.long),
                                                                       lengths=torch.ones(1, dtype=torch.long)))


def test_baselines_go_through_the_full_ranking_evaluator():
    users = np.repeat(np.arange(30), 5).astype(str)
    items = np.tile(np.array([1, 2, 3, 4, 5]), 30).astype(str)  # everyone walks 1→2→3→4→5
    split = Split(build_store(Interactions(users, items, None, "t")))
    train = [split.store.items[split.store.offsets[u]: split.train_end(u)] for u in range(30)]
    cfg = EvalConfig(filter_seen=True)
    knn = evaluate(build_model({"name": "itemknn"}, 5, 10).fit(train), split, "test", cfg, 10)
    pop = evaluate(build_model({"name": "pop"}, 5, 10).fit(train), split, "test", cfg, 10)
    assert knn["hr@10"] == 1.0 and knn["mrr"] == 1.0  # 4 is always followed by 5
    assert pop["users"] == 30 and pop["mrr"] == 1.0  # only item 5 is unseen: rank 0 after filtering
