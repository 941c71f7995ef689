"""The built-in "state sink" benchmark (spec/sinkrec.md §5), deterministic per seed.

Each user's history mixes
- routines: short item n-grams from a library shared by all users; each user has a few
  favourites (popular routines are favoured by many users) that recur often, in bursts of
  events one minute apart;
- transitions: single items drawn from the user's current interest cluster. The cluster drifts
  to a nearby cluster (after a long gap) with probability `drift_rate` per transition, so the
  next non-routine item depends on an interest that must be remembered across many routines.
  With `interest_noise` > 0 a share of these items comes from a random cluster, so a single item
  no longer names the interest: it has to be pooled over several items, many routines apart.

Routine items and cluster items are disjoint. The generator knows the true next-item
distribution at every step, so it returns an oracle score for the validation and test targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import SyntheticConfig
from .formats import Interactions

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


@dataclass
class SyntheticData:
    events: Interactions
    oracle: dict[str, np.ndarray]  # split → [n_users, n_items + 1] true next-item probabilities


def _zipf(n: int, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def generate(cfg: SyntheticConfig) -> SyntheticData:
    for key in ("routine_share", "drift_rate", "interest_noise"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ValueError(f"synthetic: data.synthetic.{key} must be in [0, 1], got {getattr(cfg, key)}")
    rng = np.random.default_rng(cfg.seed)
    n_routine_items = max(cfg.routine_len, cfg.n_items // 5)
    cluster_items = np.arange(n_routine_items + 1, cfg.n_items + 1)
    if len(cluster_items) < cfg.n_clusters:
        raise ValueError("synthetic: n_items too small for n_clusters")
    clusters = np.array_split(cluster_items, cfg.n_clusters)
    cluster_pop = [_zipf(len(c), rng) for c in clusters]
    routines = np.stack([rng.choice(np.arange(1, n_routine_items + 1), cfg.routine_len, replace=False)
                         for _ in range(cfg.n_routines)])
    routine_pop = _zipf(cfg.n_routines, rng, exponent=0.8)
    drift_steps = np.array([-2, -1, 1, 2])

    noise_dist = np.zeros(cfg.n_items + 1)
    for members, pop in zip(clusters, cluster_pop):
        noise_dist[members] = pop / cfg.n_clusters

    def transition_dist(cluster: int) -> np.ndarray:
        dist = np.zeros(cfg.n_items + 1)
        dist[clusters[cluster]] += (1 - cfg.drift_rate) * cluster_pop[cluster]
        for step in drift_steps:
            other = (cluster + step) % cfg.n_clusters
            dist[clusters[other]] += cfg.drift_rate / len(drift_steps) * cluster_pop[other]
        return (1 - cfg.interest_noise) * dist + cfg.interest_noise * noise_dist

    def slot_dist(cluster: int, favourites: np.ndarray) -> np.ndarray:
        dist = (1 - cfg.routine_share) * transition_dist(cluster)
        for r in favourites:
            dist[routines[r, 0]] += cfg.routine_share / len(favourites)
        return dist

    users, items, times = [], [], []
    oracle = {"valid": np.zeros((cfg.n_users, cfg.n_items + 1), np.float32),
              "test": np.zeros((cfg.n_users, cfg.n_items + 1), np.float32)}
    for user in range(cfg.n_users):
        length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        favourites = rng.choice(cfg.n_routines, cfg.favourites, replace=False, p=routine_pop)
        cluster = int(rng.integers(cfg.n_clusters))
        clock = 1.6e9 + float(rng.uniform(0, 30 * DAY))
        seq: list[int] = []
        stamps: list[float] = []
        # next_info[t] = (kind, value): the state that determines the distribution of seq[t]
        next_info: list[tuple[str, int]] = []
        while len(seq) < length:
            next_info.append(("slot", cluster))
            if rng.random() < cfg.routine_share:
                routine = routines[favourites[rng.integers(len(favourites))]]
                clock += float(rng.uniform(2, 12)) * HOUR
                for i, item in enumerate(routine):
                    if i:
                        next_info.append(("fixed", int(item)))
                        clock += MINUTE
                    seq.append(int(item))
                    stamps.append(clock)
            else:
                if rng.random() < cfg.drift_rate:
                    cluster = int((cluster + rng.choice(drift_steps)) % cfg.n_clusters)
                    clock += float(rng.uniform(2, 6)) * DAY
                else:
                    clock += float(rng.uniform(1, 8)) * HOUR
                # (the noise draw is skipped when there is no noise: old seeds give the same data)
                source = cluster
                if cfg.interest_noise > 0 and rng.random() < cfg.interest_noise:
                    source = int(rng.integers(cfg.n_clusters))
                seq.append(int(rng.choice(clusters[source], p=cluster_pop[source])))
                stamps.append(clock)
        seq, stamps, next_info = seq[:length], stamps[:length], next_info[:length]
        for split, position in (("valid", length - 2), ("test", length - 1)):
            kind, value = next_info[position]
            if kind == "fixed":
                oracle[split][user, value] = 1.0
            else:
                oracle[split][user] = slot_dist(value, favourites)
        users.extend([user + 1] * length)
        items.extend(seq)
        times.extend(stamps)
    events = Interactions(users=np.asarray(users, np.int64), items=np.asarray(items, np.int64),
                          timestamps=np.asarray(times, np.float64), source=f"synthetic(seed={cfg.seed})")
    return SyntheticData(events=events, oracle=oracle)
