"""Semantic state sink (spec/sinkrec.md §4, the paper's Fig. 4).

The recurrent state S_t of the first delta-rule layer is probed with one key per memory prototype j:
r[t, j] = ||S_t k_j||, normalised over prototypes to p[t, j]. The repetitive set R_t holds the top
q% prototypes by how often they occurred in the prefix; the sink mass M_t = Σ_{j∈R_t} p[t, j].
A state that sinks into repetitive patterns shows M_t rising with t, above its chance level: the
mass R_t would get if the response were spread evenly over the prototypes seen so far
(`Probe.chance`); `sink_detected` flags a state whose late M_t exceeds chance by a margin.

Prototypes and their codes come from a SinkRec checkpoint's RVQ (level 0). Probe keys:
- `mean-key`: the normalised mean of the layer's own keys k_t over positions with code j — defined
  for any model, so plain GDN and SinkRec are probed the same way;
- `memory-key`: the spec's k_{m_j}, SinkRec's memory key of prototype j mapped to the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batching import eval_batches
from ..data.sequences import Split
from ..nn.gated_deltanet import DeltaInputs, GatedDeltaNet
from ..ops.delta_rule import delta_rule_step


@dataclass
class Probe:
    response: torch.Tensor  # r [B, T, J]
    sink_mass: np.ndarray  # M_t averaged over users [T]
    chance: np.ndarray  # M_t of an evenly spread response over the prototypes seen so far [T]


def sink_detected(result: Probe, margin: float = 0.2, tail: float = 0.25) -> bool:
    """True when M_t over the last `tail` of the steps exceeds its chance level by more than `margin`."""
    last = max(1, int(round(len(result.sink_mass) * tail)))
    return float((result.sink_mass[-last:] - result.chance[-last:]).mean()) > margin


def first_delta_layer(model: torch.nn.Module) -> GatedDeltaNet:
    for module in model.modules():
        if isinstance(module, GatedDeltaNet):
            return module
    raise ValueError(f"{type(model).__name__} has no delta-rule layer to probe")


@torch.no_grad()
def recorded_states(model: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model once; replay the first delta layer's recurrence → (states [B, T, H, Dk, Dv], keys).

    A forward pre-hook on the layer's `recurrence` sees the exact inputs of the delta rule
    (after TDGD's changes to β, g and q); the layer itself keeps nothing. A looped block calls the
    layer once per loop: the last application is probed.
    """
    seen: list[DeltaInputs] = []
    hook = first_delta_layer(model).recurrence.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        model(batch)
    finally:
        hook.remove()
    inputs = seen[-1]
    b, t, h, dk = inputs.k.shape
    state = inputs.k.new_zeros(b, h, dk, inputs.v.shape[-1])
    states = []
    for step in range(t):
        _, state = delta_rule_step(inputs.q[:, step], inputs.k[:, step], inputs.v[:, step], inputs.g[:, step],
                                   inputs.beta[:, step], state, 1.0)
        states.append(state)
    return torch.stack(states, 1), inputs.k


def mean_key_probes(keys: torch.Tensor, codes: torch.Tensor, n_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keys [B, T, H, Dk], codes [B, T] → (probe keys [J, H, Dk] of codes that occur, their code ids [J])."""
    flat_codes = codes.reshape(-1)
    sums = keys.new_zeros(n_codes, *keys.shape[2:]).index_add_(0, flat_codes, keys.reshape(-1, *keys.shape[2:]))
    present = torch.bincount(flat_codes, minlength=n_codes) > 0
    return F.normalize(sums[present], dim=-1), torch.nonzero(present).squeeze(1)


def probe(states: torch.Tensor, probe_keys: torch.Tensor, probe_codes: torch.Tensor, codes: torch.Tensor,
          top_fraction: float = 0.1) -> Probe:
    """r[t, j] = ||S_t k_j|| (heads averaged), and the sink mass over the prefix-frequent prototypes."""
    # states are h = Sᵀ [Dk, Dv]: S k = hᵀ k; time in slices to bound the [.., J, Dv] intermediate
    keys = probe_keys.to(states.dtype)
    response = torch.cat([torch.einsum("bthkv,jhk->bthjv", states[:, s: s + 32], keys).norm(dim=-1).mean(2)
                          for s in range(0, states.shape[1], 32)], 1)
    share = response / response.sum(-1, keepdim=True).clamp_min(1e-12)
    # prefix counts of each probed prototype: [B, T, J]
    hits = (codes[..., None] == probe_codes[None, None, :]).to(share.dtype).cumsum(1)
    top = max(1, int(round(top_fraction * probe_codes.numel())))
    ranked = hits + 1e-6 * torch.arange(hits.shape[-1], 0, -1, device=hits.device)  # deterministic ties
    chosen = torch.zeros_like(share).scatter_(-1, ranked.topk(top, dim=-1).indices, 1.0)
    mass = (share * chosen).sum(-1)  # [B, T]
    seen = (hits > 0).to(share.dtype)
    chance = (chosen * seen).sum(-1) / seen.sum(-1).clamp_min(1)
    return Probe(response=response, sink_mass=mass.mean(0).cpu().numpy(), chance=chance.mean(0).cpu().numpy())


def histories(split: Split, length: int, users: int) -> object:
    """Test-input histories of users with at least `length` events, cut to their last `length`."""
    store = split.store
    eligible = np.flatnonzero(store.lengths - 1 >= length)[:users]
    if eligible.size == 0:
        raise ValueError(f"no user has {length} events before the test item; lower --length")
    return next(eval_batches(split, "test", length, len(eligible), eligible))
