"""Softmax attention for the models: `F.scaled_dot_product_attention` without cuDNN's backend on CUDA.

cuDNN's fused attention failed intermittently in the tuned study (torch 2.11 + its bundled cuDNN, H100
and H200, variable batch lengths): `mha_graph.execute(...).is_good()` errors in SASRec and SinkRec
trials, within bursts of illegal memory accesses that took down every process sharing the GPU. The
same failure is reported upstream (pytorch/pytorch#190321), where turning that backend off is the
known way round. Flash and memory-efficient attention cover our shapes (head sizes ≤ 256, boolean
masks); `CUDNN = True` restores PyTorch's own choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

CUDNN = False  # let PyTorch pick cuDNN's fused attention on CUDA
_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options) -> torch.Tensor:
    """`F.scaled_dot_product_attention(q, k, v, **options)`, on CUDA without the cuDNN backend."""
    if CUDNN or not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, **options)
    with sdpa_kernel(_BACKENDS):
        return F.scaled_dot_product_attention(q, k, v, **options)
