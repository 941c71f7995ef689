"""Training and evaluation run SDPA without cuDNN's fused backend on CUDA (sinkrec/nn/attention.py)."""

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sinkrec.nn import attention


def test_the_allowed_backends_take_every_call_the_models_make():
    """Under the backend list alone, the causal and masked calls of SASRec, the memory attention and
    Sessa still find a backend and equal plain softmax attention in float64."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 16, dtype=torch.float64) for _ in range(3))
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    padded = torch.rand(2, 1, 1, 7) > 0.3
    padded[..., 0] = True  # every row sees one key
    for options in ({"is_causal": True}, {"attn_mask": padded}, {"attn_mask": causal}):
        with sdpa_kernel(attention.BACKENDS):
            restricted = F.scaled_dot_product_attention(q, k, v, **options)
        allowed = options.get("attn_mask", causal)
        expected = (q @ k.transpose(-1, -2) / 4.0).masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        assert torch.allclose(restricted, expected, atol=1e-12)


def test_cudnn_is_left_out_on_cuda_only():
    assert SDPBackend.CUDNN_ATTENTION not in attention.BACKENDS
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention.without_cudnn_attention("cpu"):  # nothing to choose on the CPU: flags untouched
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention.without_cudnn_attention("cuda"):  # sdpa_kernel sets the flags without needing a GPU
        assert not torch.backends.cuda.cudnn_sdp_enabled() and torch.backends.cuda.flash_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
