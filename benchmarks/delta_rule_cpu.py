"""CPU speed of the gated delta rule: chunked PyTorch path vs the step-by-step reference.

    python benchmarks/delta_rule_cpu.py            # B=8, T=1024, H=4, Dk=Dv=64, float32, fwd+bwd
Writes benchmarks/results/delta_rule_cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from sinkrec.ops.delta_rule import delta_rule  # noqa: E402


def make(b, t, h, d, dtype):
    q, k, v = (torch.randn(b, t, h, d, dtype=dtype) for _ in range(3))
    k = torch.nn.functional.normalize(k, dim=-1)
    g = torch.nn.functional.logsigmoid(torch.randn(b, t, h, dtype=dtype))
    beta = torch.rand(b, t, h, dtype=dtype)
    return [x.requires_grad_() for x in (q, k, v, g, beta)]


def time_it(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    inputs = make(args.B, args.T, args.H, args.D, torch.float32)
    records = []
    for impl in ("reference", "chunked"):
        for mode in ("fwd", "fwd_bwd"):
            def run(impl=impl, mode=mode):
                if mode == "fwd":
                    with torch.no_grad():
                        delta_rule(*inputs, impl=impl)
                else:
                    o, _ = delta_rule(*inputs, impl=impl)
                    o.sum().backward()
            ms = time_it(run, args.repeats)
            records.append({"op": "delta_rule", "impl": impl, "B": args.B, "T": args.T, "H": args.H, "D": args.D,
                            "dtype": "fp32", "mode": mode, "device": "cpu", "ms": round(ms, 2)})
    write_results("delta_rule_cpu", records)
    ref = {r["mode"]: r["ms"] for r in records if r["impl"] == "reference"}
    print(f"{'impl':<10}{'mode':<9}{'ms':>10}{'speed-up':>10}")
    for r in records:
        print(f"{r['impl']:<10}{r['mode']:<9}{r['ms']:>10.1f}{ref[r['mode']] / r['ms']:>9.1f}x")


if __name__ == "__main__":
    main()
