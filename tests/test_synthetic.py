import numpy as np
import pytest

from sinkrec.config import DataConfig, SyntheticConfig
from sinkrec.data import load_dataset
from sinkrec.data.synthetic import generate


def small(**kw):
    return SyntheticConfig(n_users=50, n_items=120, n_clusters=6, min_len=20, max_len=60, **kw)


def test_deterministic_per_seed_and_differs_across_seeds():
    a, b, c = generate(small(seed=3)), generate(small(seed=3)), generate(small(seed=4))
    assert np.array_equal(a.events.items, b.events.items) and np.array_equal(a.events.timestamps, b.events.timestamps)
    assert not np.array_equal(a.events.items[:200], c.events.items[:200])


def test_oracle_is_a_distribution_that_covers_the_targets():
    raw = generate(small(seed=1))
    data = load_dataset(DataConfig(dataset="synthetic", synthetic=small(seed=1)))
    for which in ("valid", "test"):
        assert np.allclose(raw.oracle[which].sum(1), 1.0, atol=1e-5)
        probs = data.oracle[which]  # items never generated are not in the catalogue: mass ≤ 1
        assert (probs.sum(1) <= 1 + 1e-5).all()
        targets = data.split.targets(which)
        assert (probs[np.arange(len(targets)), targets] > 0).all()  # the generator could emit the target


def test_timestamps_increase_and_routines_recur():
    data = load_dataset(DataConfig(dataset="synthetic", synthetic=small(seed=2, routine_share=0.6)))
    store = data.store
    for u in range(store.n_users):
        assert np.all(np.diff(store.times(u)) > 0)
    seq = store.sequence(0)
    _, counts = np.unique(seq, return_counts=True)
    assert counts.max() >= 3  # favourite routines repeat


def test_interest_noise_mixes_clusters():
    base, noisy = generate(small(seed=5)), generate(small(seed=5, interest_noise=0.5))
    for which in ("valid", "test"):
        assert np.allclose(noisy.oracle[which].sum(1), 1.0, atol=1e-5)
    # noise spreads the interest's mass over every cluster: the oracle's support grows
    assert (noisy.oracle["test"] > 0).sum() > (base.oracle["test"] > 0).sum()


def test_bad_share_names_the_key():
    from sinkrec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"interest_noise must be in \[0, 1\], got 1.5"):  # when the config is built
        generate(small(interest_noise=1.5))
