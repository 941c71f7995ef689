"""Gated delta rule vs causal attention on the GPU: time (median of CUDA events) and peak memory.

Same run, same inputs: our Triton path, our chunked PyTorch path and PyTorch SDPA causal attention,
bf16, H=4, Dk=Dv=64, at (B, T) ∈ {(32, 2048), (8, 8192), (2, 32768)}; forward and forward+backward;
plus forward throughput at B=64, T=8192. Writes benchmarks/results/ops_gpu.json and a markdown table.

    python benchmarks/ops_gpu.py
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F
from common import gpu_time_ms, peak_mib, write_results

from sinkrec.ops.delta_rule import delta_rule

H, D = 4, 64


def inputs(b, t):
    q, k = (F.normalize(torch.randn(b, t, H, D, device="cuda"), dim=-1).bfloat16() for _ in range(2))
    v = torch.randn(b, t, H, D, device="cuda", dtype=torch.bfloat16)
    g = F.logsigmoid(torch.randn(b, t, H, device="cuda") + 3).bfloat16()
    beta = torch.rand(b, t, H, device="cuda", dtype=torch.bfloat16)
    return [x.requires_grad_() for x in (q, k, v, g, beta)]


def op(impl, xs):
    if impl == "sdpa":
        q, k, v = (x.transpose(1, 2) for x in xs[:3])
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return delta_rule(*xs, impl=impl)[0]


def measure(impl, b, t, mode):
    xs = inputs(b, t)
    grad = torch.randn(b, t, H, D, device="cuda", dtype=torch.bfloat16)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                op(impl, xs)
        else:
            out = op(impl, xs)
            out = out.transpose(1, 2) if impl == "sdpa" else out
            out.backward(grad)

    ms = gpu_time_ms(step, repeats=10 if impl == "chunked" else 30)
    return {"op": "delta_rule" if impl != "sdpa" else "attention", "impl": impl, "B": b, "T": t, "H": H, "D": D,
            "dtype": "bf16", "mode": mode, "ms": round(ms, 3), "peak_mib": round(peak_mib(step), 1),
            "tokens_per_s": round(b * t / ms * 1e3)}


def profile(b, t, mode="fwd_bwd") -> list[dict]:
    """Per-kernel GPU time of the Triton path, µs per call (where the time goes)."""
    xs = inputs(b, t)
    grad = torch.randn(b, t, H, D, device="cuda", dtype=torch.bfloat16)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                op("triton", xs)
        else:
            op("triton", xs).backward(grad)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    rows = [{"B": b, "T": t, "mode": mode, "kernel": e.key[:40], "us": round(e.device_time_total / 5, 1)}
            for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda r: -r["us"])
    print(f"profile B={b} T={t} {mode}: total {sum(r['us'] for r in rows):.0f} µs per call")
    for r in rows[:12]:
        print(f"  {r['kernel']:<40} {r['us']:9.1f} µs")
    return rows


@functools.cache
def check_case():
    from check_triton_gpu import make, run

    args = make(2, 1000, 4, 64, 64, seed=0)
    return args, run(args, "reference", torch.float64)


def bf16_error() -> float:
    """Worst relative error (outputs, final state, every gradient) of bf16 inputs on one check case."""
    from check_triton_gpu import rel, run

    args, reference = check_case()
    return max(rel(a, b) for a, b in zip(run(args, "triton", torch.bfloat16), reference))


def sweep(only: str | None = None) -> list[dict]:
    """Variants of the Triton path, one setting changed at a time from the defaults: speed and bf16 error.
    `only`: comma-separated label fragments; keeps the variants whose label contains one of them."""
    from sinkrec.ops.delta_rule import triton_chunk as tc

    variants = [("defaults", {}), ("tf32 products", {"LOW_PRECISION_DOT": "tf32"}),
                ("single-chain state walks", {"STATE_GROUP_MIN_CHUNKS": 1 << 30})]
    variants += [(f"state programs <= {p}", {"STATE_PROGRAMS": p}) for p in (132, 528)]
    for name, default in tc.WARPS.items():
        for warps in sorted({2, 4, 8} - {default["num_warps"]}):
            variants.append((f"{name} num_warps={warps}", {"WARPS": {**tc.WARPS, name: {"num_warps": warps}}}))
    if only:
        variants = [v for v in variants if any(part in v[0] for part in only.split(","))]
    defaults = {key: getattr(tc, key) for _, settings in variants for key in settings}
    records = []
    for label, settings in variants:
        for key, value in settings.items():
            setattr(tc, key, value)
        r = {"variant": label, "fwd_bwd_1x32768_ms": measure("triton", 1, 32768, "fwd_bwd")["ms"],
             "fwd_bwd_2x32768_ms": measure("triton", 2, 32768, "fwd_bwd")["ms"],
             "fwd_bwd_8x8192_ms": measure("triton", 8, 8192, "fwd_bwd")["ms"],
             "fwd_64x8192_ms": measure("triton", 64, 8192, "fwd")["ms"], "bf16_worst_rel_err": bf16_error()}
        records.append(r)
        times = "  ".join(f"{key[:-3]} {value:6.3f}" for key, value in r.items() if key.endswith("_ms"))
        print(f"{label:<34} {times} ms  bf16 err {r['bf16_worst_rel_err']:.1e}", flush=True)
        for key in settings:
            setattr(tc, key, defaults[key])
    return records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--impls", default="triton,chunked,sdpa")
    parser.add_argument("--git", default="", help="commit of the measured tree (.git may not travel)")
    parser.add_argument("--profile", action="store_true", help="per-kernel times of the Triton path, then exit")
    parser.add_argument("--sweep", action="store_true", help="time variants of the Triton path, then exit")
    parser.add_argument("--variants", help="--sweep: only variants whose label contains one of these (a,b,…)")
    args = parser.parse_args()
    if args.sweep:
        write_results("ops_gpu_sweep", sweep(args.variants), args.out, args.git)
        return
    if args.profile:
        rows = profile(2, 32768) + profile(8, 8192) + profile(32, 2048) + profile(64, 8192, "fwd")
        write_results("ops_gpu_profile", rows, args.out, args.git)
        return
    records = []
    shapes = [(32, 2048), (8, 8192), (2, 32768)]
    for b, t in shapes:
        for impl in args.impls.split(","):
            for mode in ("fwd", "fwd_bwd"):
                try:
                    r = measure(impl, b, t, mode)
                except torch.OutOfMemoryError:
                    r = {"impl": impl, "B": b, "T": t, "mode": mode, "error": "out of memory"}
                torch.cuda.empty_cache()
                records.append(r)
                print(r, flush=True)
    for impl in args.impls.split(","):
        r = measure(impl, 64, 8192, "fwd")
        r["note"] = "throughput"
        records.append(r)
        print(r, flush=True)
    path = write_results("ops_gpu", records, args.out, args.git)
    sdpa = {(r["B"], r["T"], r["mode"]): r["ms"] for r in records if r.get("impl") == "sdpa" and "ms" in r}
    lines = ["| B | T | mode | impl | ms | vs SDPA | peak MiB | M tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "ms" not in r:
            continue
        ratio = sdpa.get((r["B"], r["T"], r["mode"]))
        lines.append(f"| {r['B']} | {r['T']} | {r['mode']} | {r['impl']} | {r['ms']:.3f} | "
                     f"{(ratio / r['ms']) if ratio else float('nan'):.2f}× | {r['peak_mib']:.0f} | "
                     f"{r['tokens_per_s'] / 1e6:.1f} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
