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
import importlib.util
import json

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
    step, _ = op_step(impl, mode, b, t, h, d, accumulate=True)
    ms = gpu_time_ms(step, repeats=10 if impl == "chunked" else 30)
    return {"op": "delta_rule" if impl != "sdpa" else "attention", "impl": impl, "B": b, "T": t, "H": h, "D": d,
            "dtype": "bf16", "mode": mode, "ms": round(ms, 3), "peak_mib": round(peak_mib(step), 1),
            "tokens_per_s": round(b * t / ms * 1e3)}


def profile(b, t, mode="fwd_bwd", h=H, d=D, impl="triton") -> list[dict]:
    """Per-kernel GPU time of one implementation (default: the Triton path), µs per call (where the time goes)."""
    step, _ = op_step(impl, mode, b, t, h, d, accumulate=True)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    rows = [{"impl": impl, "B": b, "T": t, "H": h, "D": d, "mode": mode, "kernel": e.key[:40],
             "us": round(e.device_time_total / 5, 1)}
            for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda r: -r["us"])
    print(f"profile {impl} B={b} T={t} H={h} D={d} {mode}: total {sum(r['us'] for r in rows):.0f} µs per call")
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


# the speed targets of issue #25: (mode, B, T, H, D)
ROUND_SHAPES = [("fwd_bwd", 2, 32768, 4, 64), ("fwd", 64, 8192, 4, 64), ("fwd", 2, 16384, 16, 128)]


def round_variants() -> list[tuple[str, dict, tuple[int, ...]]]:
    """(label, module settings of triton_chunk, indices of ROUND_SHAPES it is timed on) for `--round`:
    the defaults, the path before the round (LEGACY), each of its switches reverted alone, then launch
    options and walk shapes worth a sweep (each changed alone from the defaults)."""
    from sinkrec.ops.delta_rule import triton_chunk as tc

    every, d128 = (0, 1, 2), (2,)
    variants = [("default", {}, every), ("legacy (before the #25 round)", dict(tc.LEGACY), every)]
    forward_too = ("INVERSE", "KERNEL_FILLS", "U_LOW_PRECISION", "WARPS")  # others: backward or two-level walks only
    variants += [(f"{key}={value!r} (as before)" if key != "WARPS" else "WARPS as before (prep_fwd 2 warps)",
                  {key: value}, every if key in forward_too else (0,)) for key, value in tc.LEGACY.items()]
    variants += [("INVERSE_DOT='bf16'", {"INVERSE_DOT": "bf16"}, every),
                 ("single-chain state walks", {"STATE_GROUP_MIN_CHUNKS": 1 << 30}, (0,))]
    for name, warps in [("prep_fwd", 8), ("prep_bwd", 4), ("output_bwd", 8), ("output_fwd", 8)]:
        variants.append((f"{name} num_warps={warps}", {"WARPS": {**tc.WARPS, name: {"num_warps": warps}}},
                         (0,) if "bwd" in name else every))
    before_wide = {"STATE_PROGRAMS_WIDE": 64, "WARPS_WIDE": {**tc.WARPS_WIDE, "state_fwd": {"num_warps": 8}}}
    variants += [("D128 walks as before (64 programs, state_fwd 8 warps)", before_wide, d128),
                 ("STATE_PROGRAMS_WIDE=264", {"STATE_PROGRAMS_WIDE": 264}, d128),
                 ("STATE_STAGES=3", {"STATE_STAGES": 3}, every),
                 ("STATE_DOT='bf16'", {"STATE_DOT": "bf16"}, every)]  # walks' products in bf16, as fla's
    return variants


def _settings(settings: dict):
    """Apply triton_chunk settings; returns a function that restores the previous ones."""
    from sinkrec.ops.delta_rule import triton_chunk as tc

    before = {key: getattr(tc, key) for key in settings}
    for key, value in settings.items():
        setattr(tc, key, value)
    return lambda: [setattr(tc, key, value) for key, value in before.items()]


def op_step(impl, mode, b, t, h=H, d=D, accumulate=False):
    """One call of the op: forward under no_grad, or forward + backward (gradients returned by
    autograd.grad, or accumulated into .grad with `accumulate`, as a training step does)."""
    xs = inputs(b, t, h, d)
    grad = torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                op(impl, xs)
            return
        out = op(impl, xs)
        out = out.transpose(1, 2) if impl == "sdpa" else out
        if accumulate:
            out.backward(grad)
        else:
            torch.autograd.grad(out, xs, grad, allow_unused=True)
    return step, xs


@functools.cache
def _round_reference(case: str):
    from check_triton_gpu import make, run

    shape = (2, 1000, 4, 64, 64) if case == "d64" else (1, 700, 2, 128, 128)
    args = make(*shape, seed=0, long_memory=True)
    return args, run(args, "reference", torch.float64)


def round_errors(cases=("d64",)) -> dict:
    """Worst relative error vs float64 (outputs, final state, every gradient) of fp32 and bf16 inputs."""
    from check_triton_gpu import rel, run

    out = {}
    for case in cases:
        args, reference = _round_reference(case)
        for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            out[f"{case}_{dname}_err"] = max(rel(a, b) for a, b in zip(run(args, "triton", dtype), reference))
    return out


def run_round(only: str | None = None, warm: str | None = None, peers: bool = True, save=None) -> list[dict]:
    """`--round`: every variant of `round_variants` at its ROUND_SHAPES, triton.testing.do_bench
    (median ms, L2 flushed between calls; forward+backward by autograd.grad, no .grad accumulation),
    plus its worst fp32/bf16 error vs float64. The defaults and legacy rows also get a per-call time
    with a sync after each call (host latency included, as `measure`) and the `.backward()` time
    that accumulates into .grad (what ops_gpu.py's table reports). `warm` "i/n": only run every n-th
    variant once per shape (fills Triton's compile cache from parallel processes), no timing. `save`:
    called with the records after each variant (partial results survive a timeout)."""
    from triton.testing import do_bench

    variants = round_variants()
    if only:
        variants = [v for v in variants if any(part in v[0] for part in only.split(","))]
    if warm:
        i, n = (int(x) for x in warm.split("/"))
        for label, settings, shapes in variants[i::n]:
            restore = _settings(settings)
            try:
                for s in shapes:
                    step, _ = op_step("triton", *ROUND_SHAPES[s])
                    step()
                    torch.cuda.synchronize()
                round_errors(("d64", "d128") if 2 in shapes else ("d64",))
            except Exception as error:
                print(f"warm {label}: {type(error).__name__}: {error}", flush=True)
            finally:
                restore()
                torch.cuda.empty_cache()
        for _mode, b, t, h, d in ROUND_SHAPES if peers and i == n - 1 else []:  # fla autotunes on its first calls
            try:
                op_step("fla", "fwd", b, t, h, d)[0]()
            except Exception as error:
                print(f"warm fla: {type(error).__name__}: {str(error)[:200]}", flush=True)
        return []
    records = []
    for label, settings, shapes in variants:
        restore = _settings(settings)
        try:
            r = {"variant": label, "settings": {k: str(v) for k, v in settings.items()}}
            r.update(round_errors(("d64", "d128") if 2 in shapes else ("d64",)))
            for s in shapes:
                mode, b, t, h, d = ROUND_SHAPES[s]
                step, xs = op_step("triton", mode, b, t, h, d)
                key = f"{mode}_{b}x{t}_h{h}_d{d}"
                r[f"{key}_ms"] = round(do_bench(step, warmup=10, rep=60, return_mode="median"), 4)
                if label.startswith(("default", "legacy")) and mode == "fwd_bwd":
                    r[f"{key}_synced_call_ms"] = round(gpu_time_ms(step, repeats=20), 4)
                    step_acc, _ = op_step("triton", mode, b, t, h, d, accumulate=True)
                    r[f"{key}_backward_accumulate_ms"] = round(gpu_time_ms(step_acc, repeats=20), 4)
                del step, xs
                torch.cuda.empty_cache()
        except Exception as error:
            r["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        finally:
            restore()
        records.append(r)
        print(json.dumps(r), flush=True)
        if save:
            save(records)
    if peers:
        for mode, b, t, h, d in ROUND_SHAPES:
            try:
                step, _ = op_step("fla", mode, b, t, h, d)
                ms = do_bench(step, warmup=10, rep=60, return_mode="median")
                records.append({"variant": "fla (peer)", f"{mode}_{b}x{t}_h{h}_d{d}_ms": round(ms, 4)})
            except Exception as error:  # not installed, or refused (its backward on Triton < 3.7.1 on Hopper)
                records.append({"variant": "fla (peer)", f"{mode}_{b}x{t}_h{h}_d{d}_error":
                                f"{type(error).__name__}: {str(error)[:200]}"})
            print(json.dumps(records[-1]), flush=True)
    if save:
        save(records)
    return records


def round_table(records: list[dict]) -> str:
    """Markdown: one row per variant, one column per target shape (ms, do_bench median) and errors."""
    keys = [f"{m}_{b}x{t}_h{h}_d{d}" for m, b, t, h, d in ROUND_SHAPES]
    lines = ["| variant | " + " | ".join(keys) + " | fp32 err | bf16 err |", "|---" * (len(keys) + 3) + "|"]
    for r in records:
        cells = [f"{r[k + '_ms']:.3f}" if k + "_ms" in r else ("refused" if k + "_error" in r else "")
                 for k in keys]
        errs = [max([v for k, v in r.items() if k.endswith(f"{dt}_err")], default=None) for dt in ("fp32", "bf16")]
        errs = [f"{e:.1e}" if e is not None else "" for e in errs]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " | " + " | ".join(errs) + " |"
                     + (f" {r['error'][:80]}" if "error" in r else ""))
    extra = [f"- {r['variant']}: {k} = {v}" for r in records for k, v in r.items()
             if k.endswith(("_synced_call_ms", "_backward_accumulate_ms"))]
    return "\n".join(lines + ([""] + extra if extra else []))


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
    parser.add_argument("--variants", help="--sweep/--round: only variants whose label contains one of these (a,b,…)")
    parser.add_argument("--round", action="store_true",
                        help="time the variants of the #25 round at its three target shapes (do_bench), then exit")
    parser.add_argument("--warm", help="--round: i/n, only compile every n-th variant (parallel warm-up), no timing")
    parser.add_argument("--no-peers", action="store_true", help="--round: skip fla")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.round:
        def save(records):
            path = write_results("ops_gpu_round", records, args.out, args.git)
            path.with_suffix(".md").write_text(round_table(records) + "\n")

        records = run_round(args.variants, args.warm, not args.no_peers, None if args.warm else save)
        if not args.warm:
            print(round_table(records))
        return
    if args.sweep:
        write_results("ops_gpu_sweep", sweep(args.variants), args.out, args.git)
        return
    if args.profile:
        rows = profile(2, 32768) + profile(8, 8192) + profile(32, 2048) + profile(64, 8192, "fwd")
        rows += profile(2, 16384, "fwd", 16, 128)  # the D128 target shape, beside fla's kernels where installed
        if importlib.util.find_spec("fla") is not None:
            rows += profile(2, 16384, "fwd", 16, 128, "fla") + profile(64, 8192, "fwd", impl="fla")
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
