"""torch.distributed glue for `sinkrec train` under `torchrun` (NCCL on GPUs, gloo on CPU).

Every rank builds the same global batch (the shuffle depends only on seed and epoch) and keeps
rows rank, rank + W, …; the loss is scaled so that DDP's gradient average equals the gradient of
the global token-mean loss, so W processes follow the same trajectory as one process with the
same global batch. Evaluation splits users across ranks and all-reduces metric sums (exact).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> DistInfo:
    """Join the process group that torchrun describes in the environment (no-op when alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_sum(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    if not info.enabled:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.cpu().tolist()))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Every rank reaches the barrier before any tears the group down: a rank that exits while a peer
    still talks to it can abort the peer (seen once with gloo: "terminate called without an active
    exception")."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
