"""Sessa's feedback solve on the GPU: correctness of the Triton path, then speed and memory.

    python benchmarks/sessa_solve_gpu.py [--out FILE] [--git SHA] [--sizes 8x2048,2x8192,1x32768]

1. Check: Triton (fp32, bf16) and blocked PyTorch (fp32) against the dense solve in float64, output
   and every gradient, at ragged T (relative error; tolerances 1e-3 fp32, 2e-2 bf16).
2. Time: forward and forward+backward (median of CUDA events) and peak memory above the inputs, for
   ours (blocked PyTorch, Triton), dense (the T×T triangular solve, fp32 inside) and causal SDPA of
   the same width (one head of D), all bf16 inputs, all in this run. Writes the results JSON
   (benchmarks/common.py's writer) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import gpu_time_ms, machine, peak_mib, write_results  # noqa: E402
from sinkrec.ops.feedback_solve import feedback_solve  # noqa: E402

TOL = {torch.float32: 1e-3, torch.bfloat16: 2e-2}


def make(b, t, d, dtype, seed=0, grad=False):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    ins = [torch.randn(b, t, d, generator=gen, device="cuda"), torch.randn(b, t, d, generator=gen, device="cuda"),
           torch.randn(b, t, d, generator=gen, device="cuda"),
           0.999 * torch.tanh(3 * torch.randn(b, t, generator=gen, device="cuda"))]
    return [x.to(dtype).requires_grad_(grad) for x in ins]


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


def check(records):
    ok = True
    for b, t, d in ((2, 1000, 256), (1, 1337, 64), (1, 4100, 256)):
        base = make(b, t, d, torch.float32, seed=t)
        w = torch.randn(b, t, d, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
        for impl, dtype in (("triton", torch.float32), ("triton", torch.bfloat16), ("blocked", torch.float32)):
            ins = [x.detach().to(dtype).requires_grad_() for x in base]
            ref_in = [x.detach().double().requires_grad_() for x in ins]
            want = feedback_solve(*ref_in, impl="dense")
            want_g = torch.autograd.grad((want * w.double()).sum(), ref_in)
            got = feedback_solve(*ins, impl=impl)
            got_g = torch.autograd.grad((got.float() * w).sum(), ins)
            errs = dict(zip(("s", "df", "dqb", "dkb", "dgamma"),
                            [rel(g, r) for g, r in zip((got, *got_g), (want, *want_g))]))
            passed = all(e <= TOL[dtype] for e in errs.values()) and bool(torch.isfinite(got).all())
            ok &= passed
            records.append({"op": "feedback_solve_check", "impl": impl, "B": b, "T": t, "D": d,
                            "dtype": str(dtype).split(".")[-1], "rel_err": errs, "pass": passed})
            print(f"check {impl:8s} {str(dtype):15s} B={b} T={t} D={d} " +
                  " ".join(f"{k}={v:.1e}" for k, v in errs.items()) + (" ok" if passed else " FAIL"), flush=True)
            del ins, ref_in, want, want_g, got, got_g
    return ok


def _step(impl, ins, go, grad):
    def step():
        if impl == "sdpa":
            q, k, v = (x[:, None] for x in ins[:3])
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            if grad:
                torch.autograd.grad(out, ins[:3], go[:, None])
        else:
            out = feedback_solve(*ins, impl=impl)
            if grad:
                torch.autograd.grad(out, ins, go)
    return step


def bench(records, sizes, impls, repeats, save):
    for b, t, d in sizes:
        for impl in impls:
            for mode in ("fwd", "fwd+bwd"):
                grad = mode == "fwd+bwd"
                ins = make(b, t, d, torch.bfloat16, grad=grad)
                go = torch.randn(b, t, d, device="cuda", dtype=torch.bfloat16)
                step = _step(impl, ins, go, grad)
                rec = {"op": "feedback_solve" if impl != "sdpa" else "causal_sdpa", "impl": impl, "B": b, "T": t,
                       "H": 1, "D": d, "dtype": "bfloat16", "mode": mode}
                try:
                    with torch.no_grad() if not grad else torch.enable_grad():
                        rec["ms"] = round(gpu_time_ms(step, warmup=2, repeats=repeats), 3)
                        rec["peak_mib"] = round(peak_mib(step), 1)
                except Exception as e:  # out of memory, a compile failure: record it, go on
                    rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                torch.cuda.empty_cache()
                records.append(rec)
                save()  # after every record: a run cut short keeps what it measured
                print(f"{impl:8s} B={b:<2d} T={t:<6d} {mode:8s} " +
                      (f"{rec['ms']:9.2f} ms {rec['peak_mib']:9.1f} MiB" if "ms" in rec else rec["error"]), flush=True)


def sweep(records, repeats):
    """Leaf and column-block sizes of the Triton path at the two long shapes; keeps the fastest at T=32768."""
    from sinkrec.ops.feedback_solve import triton_kernels as tk

    best = None
    for leaf in (256, 512, 1024):
        for bd in (128, 256):
            tk.LEAF, tk.BD_MAX = leaf, bd
            for b, t in ((2, 8192), (1, 32768)):
                ins = make(b, t, 256, torch.bfloat16, grad=True)
                go = torch.randn(b, t, 256, device="cuda", dtype=torch.bfloat16)
                ms = gpu_time_ms(_step("triton", ins, go, True), warmup=2, repeats=repeats)
                records.append({"op": "feedback_solve_sweep", "impl": "triton", "leaf": leaf, "BD": bd, "B": b, "T": t,
                                "D": 256, "dtype": "bfloat16", "mode": "fwd+bwd", "ms": round(ms, 3)})
                print(f"sweep leaf={leaf} BD={bd} B={b} T={t}: {ms:.2f} ms", flush=True)
            if best is None or ms < best[0]:
                best = (ms, leaf, bd)
    tk.LEAF, tk.BD_MAX = best[1], best[2]
    print(f"sweep: leaf={best[1]} BD={best[2]}", flush=True)
    return {"leaf": best[1], "BD": best[2]}


def profile(b, t):
    """Kernel time breakdown of one Triton forward+backward."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    ins = make(b, t, 256, torch.bfloat16, grad=True)
    step = _step("triton", ins, torch.randn(b, t, 256, device="cuda", dtype=torch.bfloat16), True)
    step()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        step()
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60), flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--git", default="")
    p.add_argument("--sizes", default="8x2048,2x8192,1x32768")
    p.add_argument("--impls", default="triton,blocked,dense,sdpa")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--sweep", action="store_true", help="pick the Triton leaf and column block first")
    p.add_argument("--profile", action="store_true", help="print a kernel breakdown at B=1, T=32768")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    records: list[dict] = []
    start = time.time()
    config = sweep(records, max(3, args.repeats // 2)) if args.sweep else {}
    if args.profile:
        profile(1, 32768)
    ok = True if args.no_check else check(records)

    def save():
        return write_results("sessa_solve_gpu", records, out=args.out, git=args.git,
                             extra={"checks_passed": ok, "triton_config": config,
                                    "seconds": round(time.time() - start, 1)})

    save()
    sizes = [(int(b), int(t), 256) for b, t in (s.split("x") for s in args.sizes.split(","))]
    bench(records, sizes, args.impls.split(","), args.repeats, save)
    path = save()
    print(f"\n{machine()}; checks {'passed' if ok else 'FAILED'}; {path}")
    print("| impl | B | T | D | fwd ms | fwd MiB | fwd+bwd ms | fwd+bwd MiB |\n|---|---|---|---|---|---|---|---|")
    for b, t, d in sizes:
        for impl in args.impls.split(","):
            row = {r["mode"]: r for r in records if r.get("impl") == impl and r.get("T") == t and "mode" in r}
            cells = [f"{row[m].get('ms', 'err')} | {row[m].get('peak_mib', 'err')}" for m in ("fwd", "fwd+bwd")]
            print(f"| {impl} | {b} | {t} | {d} | {cells[0]} | {cells[1]} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
