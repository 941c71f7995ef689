"""Gated delta rule vs causal attention on the GPU: time (median of CUDA events) and peak memory.

Same run, same inputs: our Triton path, our chunked PyTorch path, fla's `chunk_gated_delta_rule`
(fla-core, when installed; its backward is recorded as refused where it refuses) and PyTorch SDPA
causal attention, bf16: H=4, Dk=Dv=64 at (B, T) ∈ {(32, 2048), (8, 8192), (2, 32768)}, forward and
forward+backward, forward throughput at B=64, T=8192; the LLM shapes H=16, D=128 at (1, 8192) and
(2, 16384). Host overhead of eager calls: a call's time (CUDA events around it) ÷ the GPU time of its
kernels (profiler). Writes benchmarks/results/ops_gpu.json and a markdown table.

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
LLM = [(1, 8192), (2, 16384)]  # H = 16, D = 128


def inputs(b, t, h=H, d=D):
    q, k = (F.normalize(torch.randn(b, t, h, d, device="cuda"), dim=-1).bfloat16() for _ in range(2))
    v = torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16)
    g = F.logsigmoid(torch.randn(b, t, h, device="cuda") + 3).bfloat16()
    beta = torch.rand(b, t, h, device="cuda", dtype=torch.bfloat16)
    return [x.requires_grad_() for x in (q, k, v, g, beta)]


def op(impl, xs):
    if impl == "sdpa":
        q, k, v = (x.transpose(1, 2) for x in xs[:3])
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if impl == "fla":
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        return chunk_gated_delta_rule(*xs, scale=xs[0].shape[-1] ** -0.5)[0]
    return delta_rule(*xs, impl=impl)[0]


def measure(impl, b, t, mode, h=H, d=D):
    xs = inputs(b, t, h, d)
    grad = torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                op(impl, xs)
        else:
            out = op(impl, xs)
            out = out.transpose(1, 2) if impl == "sdpa" else out
            out.backward(grad)

    ms = gpu_time_ms(step, repeats=10 if impl == "chunked" else 30)
    return {"op": "delta_rule" if impl != "sdpa" else "attention", "impl": impl, "B": b, "T": t, "H": h, "D": d,
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


def host_overhead(b=8, t=8192, repeats=20) -> list[dict]:
    """Eager calls of the Triton path: a call's time (CUDA events around it, median) ÷ the summed GPU
    time of its kernels (profiler), forward and forward+backward."""
    xs = inputs(b, t)
    grad = torch.randn(b, t, H, D, device="cuda", dtype=torch.bfloat16)
    records = []
    for mode in ("fwd", "fwd_bwd"):
        def step(mode=mode):
            if mode == "fwd":
                with torch.no_grad():
                    op("triton", xs)
            else:
                op("triton", xs).backward(grad)

        call = gpu_time_ms(step, repeats=repeats)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(repeats):
                step()
            torch.cuda.synchronize()
        kernels = sum(e.device_time_total for e in prof.key_averages()) / repeats / 1e3
        records.append({"op": "delta_rule", "impl": "triton", "B": b, "T": t, "H": H, "D": D, "dtype": "bf16",
                        "mode": mode, "call_ms": round(call, 3), "kernels_ms": round(kernels, 3),
                        "call_over_kernels": round(call / kernels, 3)})
        print(records[-1], flush=True)
    return records


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--impls", default="triton,fla,chunked,sdpa")
    parser.add_argument("--git", default="", help="commit of the measured tree (.git may not travel)")
    parser.add_argument("--profile", action="store_true", help="per-kernel times of the Triton path, then exit")
    parser.add_argument("--sweep", action="store_true", help="time variants of the Triton path, then exit")
    parser.add_argument("--variants", help="--sweep: only variants whose label contains one of these (a,b,…)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.sweep:
        write_results("ops_gpu_sweep", sweep(args.variants), args.out, args.git)
        return
    if args.profile:
        rows = profile(2, 32768) + profile(8, 8192) + profile(32, 2048) + profile(64, 8192, "fwd")
        write_results("ops_gpu_profile", rows, args.out, args.git)
        return
    impls = args.impls.split(",")
    cases = [(b, t, H, D, ("fwd", "fwd_bwd")) for b, t in [(32, 2048), (8, 8192), (2, 32768)]]
    cases += [(64, 8192, H, D, ("fwd",))] + [(b, t, 16, 128, ("fwd", "fwd_bwd")) for b, t in LLM]
    records = []
    for b, t, h, d, modes in cases:
        for impl in impls:
            if impl == "chunked" and (d > 64 or b * t > 2**18):  # minutes per shape; the 64-wide rows show it
                continue
            for mode in modes:
                try:
                    r = measure(impl, b, t, mode, h, d)
                except torch.OutOfMemoryError:
                    r = {"impl": impl, "B": b, "T": t, "H": h, "D": d, "mode": mode, "error": "out of memory"}
                except Exception as error:  # fla's backward refuses on Triton < 3.7.1 on Hopper
                    r = {"impl": impl, "B": b, "T": t, "H": h, "D": d, "mode": mode,
                         "error": f"refused: {type(error).__name__}: {str(error)[:200]}"}
                torch.cuda.empty_cache()
                records.append(r)
                print(r, flush=True)
    overhead = host_overhead()
    path = write_results("ops_gpu", records + overhead, args.out, args.git)
    ref = {(r["B"], r["T"], r["H"], r["mode"], r["impl"]): r["ms"] for r in records if "ms" in r}
    lines = ["| B | T | H | D | mode | impl | ms | vs fla | vs SDPA | peak MiB | M tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        key = (r["B"], r["T"], r["H"], r["mode"])
        if "ms" not in r:
            lines.append(f"| {r['B']} | {r['T']} | {r['H']} | {r['D']} | {r['mode']} | {r['impl']} | "
                         f"{r['error'][:60]} | | | | |")
            continue
        ratio = " | ".join(f"{ref[(*key, peer)] / r['ms']:.2f}×" if (*key, peer) in ref else "–"
                           for peer in ("fla", "sdpa"))
        lines.append(f"| {r['B']} | {r['T']} | {r['H']} | {r['D']} | {r['mode']} | {r['impl']} | {r['ms']:.3f} | "
                     f"{ratio} | {r['peak_mib']:.0f} | {r['tokens_per_s'] / 1e6:.1f} |")
    lines += ["", "Host overhead of eager calls (B 8, T 8192, H 4, D 64): call time ÷ kernels' GPU time", "",
              "| mode | call ms | kernels ms | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['call_ms']:.3f} | {r['kernels_ms']:.3f} | {r['call_over_kernels']:.2f} |"
              for r in overhead]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
