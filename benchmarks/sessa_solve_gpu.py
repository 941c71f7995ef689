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
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import gpu_time_ms, machine, peak_mib, write_results  # noqa: E402
from sinkrec.ops.feedback_solve import feedback_solve  # noqa: E402

TOL = {torch.float32: 1e-3, torch.bfloat16: 2e-2}
DEV = "cuda"  # --smoke: "cpu" (the Triton interpreter), to try the round's control flow without a GPU
CHECK_SHAPES = ((2, 1000, 256), (1, 1337, 64), (1, 4100, 256))
ROUND_CHECK_SHAPES = ((2, 1000, 256), (1, 1337, 256), (1, 4100, 256))  # --round: D = 256 only (fewer compiles)
ROUND_CHECKS = ((1, 1337, 256, torch.float32), (1, 1337, 256, torch.bfloat16), (1, 4100, 256, torch.bfloat16))
ROUND_SHAPES = ((1, 32768), (2, 8192))


def make(b, t, d, dtype, seed=0, grad=False):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    ins = [torch.randn(b, t, d, generator=gen, device=DEV), torch.randn(b, t, d, generator=gen, device=DEV),
           torch.randn(b, t, d, generator=gen, device=DEV),
           0.999 * torch.tanh(3 * torch.randn(b, t, generator=gen, device=DEV))]
    return [x.to(dtype).requires_grad_(grad) for x in ins]


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


def check(records):
    ok = True
    for b, t, d in CHECK_SHAPES:
        base = make(b, t, d, torch.float32, seed=t)
        w = torch.randn(b, t, d, device=DEV, generator=torch.Generator(device=DEV).manual_seed(1))
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


# triton_kernels' speed switches: the value each takes when on (off: False / 0)
ALL_ON = {"LONGEST_FIRST": True, "FUSED_STEP": True, "TRITON_LEAVES": True, "PUSH_SPLIT": True, "INV_BASE": 128}
SWITCHES = tuple(ALL_ON)
FUSED = {"FUSED_DQDK": True}  # timed as all_on + this; the tuned set takes it when faster
# per-kernel tile candidates of the round (BM, BN, num_warps, num_stages); triton_kernels.CFG's own is timed first
CFG_CANDIDATES = {  # the largest kernels first (the sweep stops when time runs short); lse/dq: BN ≤ BM, dk: BM ≤ BN
    "dq": [(64, 64, 8, 1), (64, 64, 8, 2), (64, 32, 4, 2), (128, 64, 8, 1), (128, 32, 8, 2)],
    "dk": [(64, 64, 8, 1), (64, 64, 8, 2), (32, 64, 4, 2), (64, 128, 8, 1), (32, 128, 8, 2)],
    "dqdk": [(64, 128, 8, 1), (64, 128, 8, 2), (32, 64, 4, 2), (32, 128, 8, 2)],  # 64×64: over shared memory
    "push": [(64, 64, 8, 2), (64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3), (128, 32, 8, 2)],
    "step": [(64, 64, 64, 4, 2), (32, 32, 64, 4, 2), (64, 32, 32, 4, 3), (32, 32, 32, 2, 3)],  # BM, BK, BD, w, st
    "lse": [(64, 64, 4, None), (128, 64, 8, None), (128, 128, 8, 2), (128, 32, 4, 2)],
}
RESERVE_S = 25  # seconds kept for the final "tuned" variant


def _set(tk, switches: dict, cfg: dict | None = None, leaf: int | None = None, defaults=None):
    """Module constants of triton_kernels: every switch off unless named, CFG from `defaults` then `cfg`."""
    for k, on in {**ALL_ON, **FUSED}.items():
        setattr(tk, k, switches.get(k, type(on)()))
    tk.CFG = {name: dict(v) for name, v in defaults["CFG"].items()}
    tk.STEP_CFG = dict(defaults["STEP_CFG"])
    for name, tiles in (cfg or {}).items():
        if name == "step":
            tk.STEP_CFG = dict(zip(("BM", "BK", "BD", "num_warps", "num_stages"), tiles))
        else:
            tk.CFG[name] = dict(zip(("BM", "BN", "num_warps", "num_stages"), tiles))
    tk.LEAF = leaf or defaults["LEAF"]


def _median_ms(fn) -> float:
    from triton.testing import do_bench

    if DEV != "cuda":
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _check_one(b, t, d, dtype, records, tag):
    base = make(b, t, d, torch.float32, seed=t)
    w = torch.randn(b, t, d, device=DEV, generator=torch.Generator(device=DEV).manual_seed(1))
    ins = [x.detach().to(dtype).requires_grad_() for x in base]
    ref_in = [x.detach().double().requires_grad_() for x in ins]
    want = feedback_solve(*ref_in, impl="dense")
    want_g = torch.autograd.grad((want * w.double()).sum(), ref_in)
    got = feedback_solve(*ins, impl="triton")
    got_g = torch.autograd.grad((got.float() * w).sum(), ins)
    errs = dict(zip(("s", "df", "dqb", "dkb", "dgamma"), [rel(g, r) for g, r in zip((got, *got_g), (want, *want_g))]))
    passed = all(e <= TOL[dtype] for e in errs.values()) and bool(torch.isfinite(got).all())
    records.append({"op": "feedback_solve_round_check", "variant": tag, "B": b, "T": t, "D": d,
                    "dtype": str(dtype).split(".")[-1], "rel_err": errs, "pass": passed})
    print(f"check {tag:10s} {str(dtype):15s} B={b} T={t} D={d} " + " ".join(f"{k}={v:.1e}" for k, v in errs.items())
          + (" ok" if passed else " FAIL"), flush=True)
    return passed


def run_round(records, save, budget_s: float):
    """One GPU call (issue 25): the default path's check, the switches' check, a per-kernel tile sweep at
    1×32768 (all switches on), then every variant at 1×32768 and 2×8192 (fwd+bwd, bf16, D = 256)."""
    from sinkrec.ops.feedback_solve import triton_kernels as tk

    start = time.time()
    defaults = {"CFG": {k: dict(v) for k, v in tk.CFG.items()}, "STEP_CFG": dict(tk.STEP_CFG), "LEAF": tk.LEAF}
    left = lambda: budget_s - (time.time() - start)  # noqa: E731
    global CHECK_SHAPES
    if DEV == "cuda":
        CHECK_SHAPES = ROUND_CHECK_SHAPES
    # the default path (all switches as committed); SESSA_ROUND_SKIP_DEFAULT=1 when an earlier call checked it
    ok = True if os.environ.get("SESSA_ROUND_SKIP_DEFAULT") else check(records)
    save(ok)
    for tag, switches in (("all_on", ALL_ON), ("all_on+fused", {**ALL_ON, **FUSED})):
        _set(tk, switches, defaults=defaults)
        for b, t, d, dtype in ROUND_CHECKS:
            try:
                ok &= _check_one(b, t, d, dtype, records, tag)
            except Exception as e:  # a kernel that does not fit the GPU (shared memory): that set is not timed
                records.append({"op": "feedback_solve_round_check", "variant": tag, "B": b, "T": t, "D": d,
                                "error": f"{type(e).__name__}: {str(e)[:200]}"})
                print(f"check {tag} B={b} T={t}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                break
    save(ok)
    print(f"checks {'passed' if ok else 'FAILED'} ({time.time() - start:.0f} s)", flush=True)

    shapes = ROUND_SHAPES
    inputs = {}
    for b, t in shapes:
        ins = make(b, t, 256, torch.bfloat16, grad=True)
        inputs[(b, t)] = (ins, torch.randn(b, t, 256, device=DEV, dtype=torch.bfloat16))

    def time_variant(name, switches, cfg=None, leaf=None, shape_list=shapes, modes=("fwd+bwd",)):
        out = {}
        for b, t in shape_list:
            for mode in modes:
                if left() < 5:
                    print(f"skip {name} {b}x{t} {mode}: out of time", flush=True)
                    continue
                _set(tk, switches, cfg, leaf, defaults)
                ins, go = inputs[(b, t)]
                step = _step("triton", ins, go, mode == "fwd+bwd")
                try:
                    with torch.no_grad() if mode == "fwd" else torch.enable_grad():
                        ms = _median_ms(step)
                except Exception as e:  # a tile that does not compile (shared memory): record, go on
                    records.append({"op": "feedback_solve_round", "variant": name, "B": b, "T": t, "mode": mode,
                                    "error": f"{type(e).__name__}: {str(e)[:200]}"})
                    print(f"{name:28s} {b}x{t:<6d} {mode:8s} error {type(e).__name__}", flush=True)
                    continue
                records.append({"op": "feedback_solve_round", "variant": name, "B": b, "T": t, "D": 256,
                                "dtype": "bfloat16", "mode": mode, "ms": round(ms, 3), "switches": switches,
                                "cfg": cfg or {}, "leaf": leaf or defaults["LEAF"]})
                out[(b, t, mode)] = ms
                print(f"{name:28s} {b}x{t:<6d} {mode:8s} {ms:8.2f} ms", flush=True)
                save(ok)
        return out

    results = {}
    # the switch sets first: a round cut short by its budget still compares them
    results["all_on"] = time_variant("all_on", ALL_ON, modes=("fwd", "fwd+bwd"))
    results["all_on+FUSED_DQDK"] = time_variant("all_on+FUSED_DQDK", {**ALL_ON, **FUSED})
    results["current"] = time_variant("current", {}, modes=("fwd", "fwd+bwd"))
    for k, on in ALL_ON.items():
        results[k] = time_variant(k, {k: on})
    target = (*shapes[0], "fwd+bwd")
    on = {**ALL_ON, **FUSED} if results["all_on+FUSED_DQDK"].get(target, 1e9) < results["all_on"].get(target, 1e9) \
        else dict(ALL_ON)
    base_key = "all_on+FUSED_DQDK" if "FUSED_DQDK" in on else "all_on"
    leaf_keys = {defaults["LEAF"]: base_key}
    for leaf in (512, 2048):
        if leaf != defaults["LEAF"]:
            leaf_keys[leaf] = f"on_leaf{leaf}"
            results[leaf_keys[leaf]] = time_variant(leaf_keys[leaf], on, leaf=leaf)
    best_leaf = min(leaf_keys, key=lambda lf: results[leaf_keys[lf]].get(target, 1e9))
    # tiles, one kernel at a time, at the target shape with the faster switch set
    best_cfg = {}
    for name, cands in CFG_CANDIDATES.items():
        if (name == "dqdk") != ("FUSED_DQDK" in on):
            continue  # the kernels this switch set does not run
        current = tuple(tk.CFG[name].values()) if name in tk.CFG else cands[0]  # what the timed sets ran
        timed = {current: results[leaf_keys[best_leaf]].get(target)}
        for cand in [c for c in cands if c != current]:
            if left() < RESERVE_S:
                print(f"skip {name}={cand}: time kept for the tuned variant", flush=True)
                continue
            r = time_variant(f"{name}={cand}", on, {**best_cfg, name: cand}, best_leaf, shape_list=shapes[:1])
            timed[cand] = r.get(target)
        timed = {c: v for c, v in timed.items() if v is not None}
        if timed:
            best_cfg[name] = min(timed, key=timed.get)
    print(f"picked: {on}, tiles {best_cfg}, leaf {best_leaf}", flush=True)
    results["tuned"] = time_variant("tuned", on, best_cfg, best_leaf, modes=("fwd", "fwd+bwd"))
    _set(tk, {}, defaults=defaults)
    summary = {"switches": on, "best_cfg": {k: list(v) for k, v in best_cfg.items()}, "best_leaf": best_leaf}
    (b0, t0), (b1, t1) = shapes
    print(f"\n| variant | fwd {b0}x{t0} | fwd+bwd {b0}x{t0} | fwd+bwd {b1}x{t1} |\n|---|---|---|---|")
    for name, r in results.items():
        cells = [f"{r[key]:.2f}" if key in r else "-" for key in ((b0, t0, "fwd"), target, (b1, t1, "fwd+bwd"))]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return ok, summary


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
    p.add_argument("--round", action="store_true",
                   help="issue 25's one-call round: checks, then the speed switches and tiles of triton_kernels")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # the round on CPU, tiny shapes
    p.add_argument("--budget", type=float, default=170.0, help="seconds the --round may take (stops timing after)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    records: list[dict] = []
    start = time.time()
    if args.smoke:  # TRITON_INTERPRET=1: the round's control flow on the CPU at tiny shapes
        global DEV, CHECK_SHAPES, ROUND_CHECKS, ROUND_SHAPES
        DEV, CHECK_SHAPES, ROUND_SHAPES = "cpu", ((1, 100, 32),), ((1, 192), (2, 64))
        ROUND_CHECKS = ((1, 150, 32, torch.float32), (1, 130, 16, torch.bfloat16))
        import triton.runtime.interpreter as ti  # Triton 3.6's interpreter under NumPy ≥ 2.4: 1-element index arrays

        patch = ti._patch_lang_tensor
        ti._patch_lang_tensor = lambda tensor, scope: (patch(tensor, scope), scope.set_attr(
            tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0])))
    if args.round:
        extra = {}

        def save_round(passed):
            return write_results("sessa_solve_round", records, out=args.out, git=args.git,
                                 extra={"checks_passed": passed, **extra, "seconds": round(time.time() - start, 1)})

        ok, extra["round"] = run_round(records, save_round, args.budget)
        print(f"\n{machine()}; checks {'passed' if ok else 'FAILED'}; {save_round(ok)}")
        return 0 if ok else 1
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
