"""Which fused attention the models' `scaled_dot_product_attention` calls may use on CUDA.

cuDNN's fused attention failed intermittently in the tuned study (torch 2.11 with its bundled cuDNN,
H100 and H200, batches of varying length): `mha_graph.execute(...).is_good()` errors in SASRec and
SinkRec trials, inside bursts of illegal memory accesses that took down every process sharing the
GPU. The same failure is reported upstream (pytorch/pytorch#190321), where leaving that backend out is
the known way round. Flash and memory-efficient attention cover our shapes and compute the same
function, so training and evaluation run under `without_cudnn_attention()`; the model code is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

CUDNN = False  # True: let PyTorch pick cuDNN's fused attention again
BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@contextlib.contextmanager
def without_cudnn_attention(device: torch.device | str) -> Iterator[None]:
    """Within the block, SDPA on `device` (when CUDA) uses flash, memory-efficient or math attention."""
    if CUDNN or torch.device(device).type != "cuda":
        yield
        return
    with sdpa_kernel(BACKENDS):
        yield
