"""One model step for many SinkRec users at once: their streaming caches stacked along the batch dimension.

A call that carries events of 16 users takes, at each position, one `encode_step` over all users
that still have an event there, instead of 16 separate steps: the per-op overhead of a small step
is paid once. The result equals the one-user-at-a-time step up to floating-point summation order
(a batched matmul may add in another order): the tests hold it to 1e-12 in float64. Because a
state built this way is not bit-for-bit a replay of its log, the engine uses it only when asked
(`Engine(batch_steps=True)`, `sinkrec serve --batch-steps`). GDN does not need it: its row step
(rows.py) batches every call, and concurrent calls, bit for bit.

Caches are stacked only when their structure matches (same None fields, same shapes, same
integers, e.g. a user's first step has no convolution tail yet); others are stepped in their own group.
"""

from __future__ import annotations

import dataclasses

import torch


def signature(cache) -> object:
    """What must match for caches to be stacked: structure, shapes, dtypes and plain values."""
    if isinstance(cache, torch.Tensor):
        return ("t", tuple(cache.shape[1:]), cache.dtype)
    if cache is None or isinstance(cache, (bool, int, float, str)):
        return cache
    if isinstance(cache, (list, tuple)):
        return tuple(signature(c) for c in cache)
    if isinstance(cache, dict):
        return tuple((k, signature(v)) for k, v in cache.items())
    if dataclasses.is_dataclass(cache):
        return (type(cache).__name__, tuple(signature(getattr(cache, f.name)) for f in dataclasses.fields(cache)))
    raise TypeError(f"cannot batch a {type(cache).__name__} cache")


def stack(caches: list):
    """Caches of the same signature, concatenated along dim 0 (each holds batch size 1)."""
    first = caches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(caches, 0)
    if first is None or isinstance(first, (bool, int, float, str)):
        return first
    if isinstance(first, (list, tuple)):
        return type(first)(stack([c[i] for c in caches]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: stack([c[k] for c in caches]) for k in first}
    return type(first)(**{f.name: stack([getattr(c, f.name) for c in caches]) for f in dataclasses.fields(first)})


def unstack(cache, i: int):
    """Row `i` of a stacked cache, as a cache of batch size 1 (its own memory)."""
    if isinstance(cache, torch.Tensor):
        return cache[i:i + 1].clone()
    if cache is None or isinstance(cache, (bool, int, float, str)):
        return cache
    if isinstance(cache, (list, tuple)):
        return type(cache)(unstack(c, i) for c in cache)
    if isinstance(cache, dict):
        return {k: unstack(v, i) for k, v in cache.items()}
    return type(cache)(**{f.name: unstack(getattr(cache, f.name), i) for f in dataclasses.fields(cache)})


@torch.inference_mode()
def step_many(model, caches: list, items: list[int], times: list[float]) -> tuple[list, torch.Tensor]:
    """One event for each of several users: (their new caches, hidden outputs [n, d]) in input order."""
    groups: dict[object, list[int]] = {}
    for n, cache in enumerate(caches):
        groups.setdefault(signature(cache), []).append(n)
    new, hidden = list(caches), [None] * len(caches)
    for members in groups.values():
        batch = stack([caches[n] for n in members])
        out = model.encode_step(torch.tensor([[items[n]] for n in members]), batch,
                                torch.tensor([[times[n]] for n in members], dtype=torch.float64))
        for row, n in enumerate(members):
            new[n], hidden[n] = unstack(batch, row), out[row, -1]
    return new, torch.stack(hidden)
