"""Which head sizes the Triton kernels take (importable without Triton)."""


def triton_head_sizes_ok(dk: int, dv: int) -> bool:
    """Dk a power of two ≥ 16 and Dv ≥ 16; `auto` uses the chunked path for other sizes."""
    return dk >= 16 and dk & (dk - 1) == 0 and dv >= 16
