"""Which inline step a served model gets: the batch-invariant row step of GDN (rows.py) or SinkRec
(fused_sinkrec.py)."""

from __future__ import annotations

from . import fused_sinkrec, rows


def stepper(model):
    """`step(cache, item, when) -> hidden [1, 1, d]` for this model, or None when it has no inline step.

    A step precomputes what depends only on the weights (merged projections), once: it belongs to a
    model whose weights no longer change, as in serving."""
    if rows.supports(model):
        return rows.RowsStep(model)
    if fused_sinkrec.supports(model):
        return fused_sinkrec.SinkRecStep(model)
    return None
