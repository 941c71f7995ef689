"""Which inline single-event step a served model gets (its own module: fused_sinkrec builds on fused)."""

from __future__ import annotations

from . import fused, fused_sinkrec


def stepper(model):
    """`step(cache, item, when) -> hidden [1, 1, d]` for this model, or None when it has no inline step.

    A step precomputes what depends only on the weights (merged projections), once: it belongs to a
    model whose weights no longer change, as in serving."""
    if fused.supports(model):
        return fused.GDNStep(model)
    if fused_sinkrec.supports(model):
        return fused_sinkrec.SinkRecStep(model)
    return None
