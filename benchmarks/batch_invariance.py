"""Which CPU ops give row b of a B-row batch bit for bit what row b gives alone (serve/row_ops.py says why
it matters). Counts the rows that differ, per way of writing a product, at 1 and 2 torch threads.
Writes benchmarks/results/batch_invariance.json and prints a table.

    python benchmarks/batch_invariance.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results  # noqa: E402
from sinkrec.serve.row_ops import linear  # noqa: E402

BATCHES = (2, 5, 9, 16)


def differing(f, inputs: list[torch.Tensor]) -> int:
    """Rows of f(batch) that differ from f(that row alone)."""
    out = f(*inputs)
    return sum(not torch.equal(f(*[x[i:i + 1] for x in inputs])[0], out[i]) for i in range(inputs[0].shape[0]))


def scores_bmm(q, k):  # per-row matrices through one batched matmul: q [B, H, dh], k [B, n, H, dh]
    b, n, h, dh = k.shape
    return torch.bmm(q.reshape(b * h, 1, dh), k.permute(0, 2, 3, 1).reshape(b * h, dh, n)).view(b, h, n)


def scores_sum(q, k):  # the same as elementwise products summed (serve/fused_sinkrec.py: attend)
    return (q[:, None] * k).sum(-1).transpose(1, 2)


def state_read(k, s):  # the delta rule's kᵀh of one row per user (row_ops.DeltaRows.recur)
    return torch.matmul(k[..., None, :], s)[..., 0, :]


def cases(g: torch.Generator):
    """(name, function, list of input shapes without the batch dim)."""
    for n in (3, 33, 64, 65, 73, 129):
        for h, dh in ((2, 16), (4, 8), (2, 32), (1, 64)):
            shapes = [(h, dh), (n, h, dh)]
            yield "attention scores, batched matmul", scores_bmm, shapes
            yield "attention scores, elementwise sum", scores_sum, shapes
    for h in (1, 2, 4):
        for dk in (8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 192, 256):
            yield "delta-rule state read, matmul", state_read, [(h, dk), (h, dk, dk)]
    for d, e in ((64, 324), (128, 64), (256, 128), (344, 128), (512, 128)):
        weight = torch.randn(d, e, generator=g)
        yield "linear (bmm, weight expanded)", lambda x, w=weight: linear(x, w), [(d,)]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (none beyond --help), importable for docs/generate.py --check."""
    return argparse.ArgumentParser(description=__doc__.splitlines()[0])


def main() -> None:
    build_parser().parse_args()
    records = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        g = torch.Generator().manual_seed(0)
        totals: dict[str, list[int]] = {}
        for name, f, shapes in cases(g):
            for b in BATCHES:
                inputs = [torch.randn(b, *s, generator=g) for s in shapes]
                count = totals.setdefault(name, [0, 0])
                count[0] += differing(f, inputs)
                count[1] += b
        records += [{"threads": threads, "op": name, "rows_differing": d, "rows": n} for name, (d, n) in totals.items()]
    path = write_results("batch_invariance", records)
    print("| op | threads | rows differing |\n|---|---:|---:|")
    for r in records:
        print(f"| {r['op']} | {r['threads']} | {r['rows_differing']:,} of {r['rows']:,} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
