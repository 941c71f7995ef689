"""The models' attention (sinkrec/nn/attention.py): SDPA restricted to flash, memory-efficient and math."""

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from sinkrec.nn import attention as attn


def test_the_allowed_backends_take_every_call_the_models_make():
    """Under the backend list alone (what CUDA calls run with), the masked, causal and dropout-free calls of
    SASRec, the memory attention and Sessa still find a backend and match plain math attention in float64."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 16, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(2, 1, 1, 7) > 0.3
    mask[..., 0] = True  # every row sees one key
    for options in ({"is_causal": True}, {"attn_mask": mask}, {"attn_mask": torch.ones(7, 7, dtype=torch.bool).tril()}):
        with sdpa_kernel(attn._BACKENDS):
            restricted = F.scaled_dot_product_attention(q, k, v, **options)
        scores = q @ k.transpose(-1, -2) / 4.0
        allowed = options.get("attn_mask", torch.ones(7, 7, dtype=torch.bool).tril())
        expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        assert torch.allclose(restricted, expected, atol=1e-12)
        assert torch.equal(attn.attention(q, k, v, **options), F.scaled_dot_product_attention(q, k, v, **options))


def test_cudnn_is_left_out():
    assert attn.CUDNN is False and torch.nn.attention.SDPBackend.CUDNN_ATTENTION not in attn._BACKENDS
