"""GPU check of the Triton delta-rule path against the float64 reference, on the GPU itself.

Outputs, final states and the gradients of q, k, v, g, β and the initial state, for several shapes
(T not a multiple of the chunk, packed sequences, padding), fp32 and bf16 inputs; and every head size
(Dk, Dv ∈ {16, 32, 64, 128, 256}: the diagonal and Dk ≠ Dv pairs, fp32, bf16 and fp16 inputs,
long-memory inputs). Fails (exit 1) past the tolerances of issues #7 and #20: 1e-3 (fp32 inputs),
2e-2 (bf16 and fp16 inputs). `--part i/n` runs every n-th case (parallel processes compile faster).

    python benchmarks/check_triton_gpu.py
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import write_results

from sinkrec.ops.delta_rule import delta_rule

DEVICE = "cuda"  # "cpu" for a dry run under TRITON_INTERPRET=1
TOL = {"fp32": 1e-3, "bf16": 2e-2, "fp16": 2e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# head sizes (Dk, Dv): every size on the diagonal, and pairs with Dk ≠ Dv from both sides
HEAD_SIZES = [(16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (16, 256), (256, 16), (32, 64), (64, 128),
              (128, 64), (128, 256), (256, 128), (128, 48)]
FP16_SIZES = {(64, 64), (128, 128), (256, 256), (128, 64)}


def make(b, t, h, dk, dv, seed, long_memory=False):
    """Random float64 inputs. `long_memory`: decays nearer 1 and small writes, so a state carries over
    several 64-step chunks and a group's map in the two-level state walks matters (tests/test_delta_rule)."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, device=DEVICE, dtype=torch.float64)  # noqa: E731
    q, k = torch.nn.functional.normalize(r(b, t, h, dk), dim=-1), torch.nn.functional.normalize(r(b, t, h, dk), dim=-1)
    v = r(b, t, h, dv)
    g = torch.nn.functional.logsigmoid(r(b, t, h) + (5 if long_memory else 3))  # decays mostly near 1: the hard case
    beta = torch.sigmoid(r(b, t, h) - (2 if long_memory else 0))
    h0 = r(b if b > 1 else 3, h, dk, dv) * 0.1
    return q, k, v, g, beta, h0


def run(args, impl, dtype, **kw):
    q, k, v, g, beta, h0 = (x.to(dtype).detach().requires_grad_() for x in args)
    if kw.get("cu_seqlens") is None:
        h0 = h0[: q.shape[0]]
        h0 = h0.detach().requires_grad_()
    o, hT = delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, impl=impl, **kw)
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    loss = (o.double() * torch.randn(o.shape, generator=gen, device=DEVICE, dtype=torch.float64)).sum() + \
        (hT.double() * torch.randn(hT.shape, generator=gen, device=DEVICE, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, [q, k, v, g, beta, h0])
    return [o, hT, *grads]


def check_custom_op(dtype, dname) -> dict:
    """`opcheck_ops` on the GPU, q and k strided as the heads of a projection are."""
    from sinkrec.ops.delta_rule.triton_chunk import opcheck_ops

    q, k, v, g, beta, h0 = (x.to(dtype) for x in make(2, 200, 2, 64, 64, seed=11))
    q, k = (x.transpose(2, 3).contiguous().transpose(2, 3) for x in (q, k))
    results = {f"{op} {label}": report for label, state in (("with h0", h0[:2].float()), ("no h0", None))
               for op, report in opcheck_ops(q, k, v, g, beta, state).items()}
    ok = all(outcome == "SUCCESS" for r in results.values() for outcome in r.values())
    print(f"opcheck sinkrec::delta_rule_fwd/bwd {dname}: {'PASS' if ok else 'FAIL'} {results}", flush=True)
    return {"op": "opcheck sinkrec::delta_rule_fwd/bwd", "dtype": dname, "results": results, "pass": ok}


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# `--round` (issue #25): the target shapes, checked against the float64 chunked path (the step-by-step
# reference would take minutes there; tests/test_delta_rule.py checks chunked against it), and small
# odd shapes against the step-by-step reference: (label, (B, T, H, Dk, Dv), extra, reference impl)
ROUND_CASES = [("target 2x32768 H4 D64 (two-level walks, fused backward)", (2, 32768, 4, 64, 64), {}, "chunked"),
               ("target 64x8192 H4 D64 forward", (64, 8192, 4, 64, 64), "forward", "chunked"),
               ("8x8192 H4 D64", (8, 8192, 4, 64, 64), {}, "chunked"),
               ("target 2x16384 H16 D128", (2, 16384, 16, 128, 128), {}, "chunked"),
               ("B1 T1000 (T % 64 ≠ 0) long memory", (1, 1000, 2, 64, 64), "long", "reference"),
               ("B3 T333 Dv=48", (3, 333, 2, 64, 48), {}, "reference"),
               ("B2 T130 Dk=16 Dv=256 long memory", (2, 130, 2, 16, 256), "long", "reference"),
               ("B2 T200 Dk=256 Dv=32 long memory", (2, 200, 2, 256, 32), "long", "reference"),
               ("B1 T4000 (two-level walks) long memory", (1, 4000, 2, 64, 64), "long", "chunked"),
               ("B1 T300 Dk=32 Dv=128 no h0, o only", (1, 300, 3, 32, 128), "o_only", "reference"),
               # small heads with the full backward (GDN with 4 or 2 heads at d_model 64): the fused backward
               # faulted at Dk = Dv = 16 (repro_small_heads-h100-f161462.json) while no case here had them
               ("B8 T200 H4 Dk=16 Dv=16", (8, 200, 4, 16, 16), {}, "reference"),
               ("B8 T200 H2 Dk=32 Dv=32", (8, 200, 2, 32, 32), {}, "reference"),
               ("B4 T200 H2 Dk=64 Dv=16", (4, 200, 2, 64, 16), {}, "reference")]


def run_round_checks(part: int, parts: int) -> tuple[list[dict], bool]:
    """The `--round` cases (every `parts`-th from `part`), fp32 and bf16, the current defaults."""
    records, failed = [], False
    names = ["o", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dh0"]
    for index, (label, shape, kw, ref_impl) in enumerate(ROUND_CASES):
        if index % parts != part:
            continue
        args = make(*shape, seed=index, long_memory=kw == "long")
        forward_only = kw == "forward"
        if kw == "o_only":
            reference = run_o_only(args, ref_impl, torch.float64)
        elif forward_only:
            reference = run_forward(args, ref_impl, torch.float64)
        else:
            reference = run(args, ref_impl, torch.float64)
        for dname in ("fp32", "bf16"):
            runner = run_o_only if kw == "o_only" else run_forward if forward_only else run
            try:
                got = runner(args, "triton", DTYPES[dname])
            except Exception as error:
                failed = True
                records.append({"case": label, "shape": list(shape), "dtype": dname, "pass": False,
                                "error": f"{type(error).__name__}: {str(error)[:300]}"})
                print(f"{label:<58}{dname:<6}FAIL  {records[-1]['error']}", flush=True)
                continue
            errors = {n: rel(a, b) for n, a, b in zip(names, got, reference)}
            ok = all(e <= TOL[dname] for e in errors.values()) and all(torch.isfinite(x).all() for x in got)
            failed |= not ok
            records.append({"op": "delta_rule", "impl": "triton", "case": label, "shape": list(shape), "dtype": dname,
                            "reference": ref_impl, "rel_err": {k: float(f"{v:.3g}") for k, v in errors.items()},
                            "tolerance": TOL[dname], "pass": ok})
            worst = max(errors, key=errors.get)
            print(f"{label:<58}{dname:<6}{'PASS' if ok else 'FAIL'}  worst {worst} {errors[worst]:.2e}  "
                  + " ".join(f"{n}={e:.1e}" for n, e in errors.items()), flush=True)
        del reference
        torch.cuda.empty_cache()
    return records, failed


def run_forward(args, impl, dtype):
    """Outputs and final state only (no graph kept)."""
    with torch.no_grad():
        q, k, v, g, beta, h0 = (x.to(dtype) for x in args)
        return list(delta_rule(q, k, v, g, beta, initial_state=h0[: q.shape[0]], output_final_state=True, impl=impl))


def run_o_only(args, impl, dtype):
    """No initial state, a loss on o alone (the backward gets no final state's gradient): o, final
    state, dq, dk, dv, dg, dβ."""
    q, k, v, g, beta, _ = (x.to(dtype).detach().requires_grad_() for x in args)
    o, hT = delta_rule(q, k, v, g, beta, output_final_state=True, impl=impl)
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    loss = (o.double() * torch.randn(o.shape, generator=gen, device=DEVICE, dtype=torch.float64)).sum()
    return [o, hT, *torch.autograd.grad(loss, [q, k, v, g, beta])]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?")
    parser.add_argument("--git", default="", help="commit of the checked tree (.git may not travel)")
    parser.add_argument("--only", help="run only the cases whose label contains this text")
    parser.add_argument("--part", default="0/1", help="i/n: run only the cases whose index is i mod n")
    parser.add_argument("--round", action="store_true", help="only the cases of the #25 round (ROUND_CASES)")
    return parser


def main() -> None:
    opts = build_parser().parse_args()
    part, parts = (int(x) for x in opts.part.split("/"))
    if opts.round:
        records, failed = run_round_checks(part, parts)
        write_results("triton_check_gpu_round", records, opts.out, opts.git)
        sys.exit(1 if failed else 0)
    cases = [("B2 T256", (2, 256, 4, 64, 64), {}), ("B1 T1000 (T % 64 ≠ 0)", (1, 1000, 2, 64, 64), {}),
             ("B3 T333 Dv=48", (3, 333, 2, 64, 48), {}), ("B2 T512 Dk=32", (2, 512, 4, 32, 64), {})]
    records, failed = [], False
    for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if part == 0 and not opts.only:
            records.append(check_custom_op(dtype, dname))
            failed |= not records[-1]["pass"]
    names = ["o", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dh0"]
    cases += [("packed 3 seqs", (1, 700, 2, 64, 64), "packed"), ("padding", (2, 300, 2, 64, 64), "pad"),
              ("B1 T8192 (two-level state walks)", (1, 8192, 2, 64, 64), {}),
              ("B1 T8192 (two-level state walks, long memory)", (1, 8192, 2, 64, 64), "long")]
    cases += [(f"Dk={dk} Dv={dv} long memory", (2, 300, 2, dk, dv), "long") for dk, dv in HEAD_SIZES]
    cases = [c for i, c in enumerate(cases) if (not opts.only or opts.only in c[0]) and i % parts == part]
    for label, shape, kw in cases:
        args = make(*shape, seed=len(records), long_memory=kw == "long")
        extra = {}
        if kw == "packed":
            extra["cu_seqlens"] = torch.tensor([0, 130, 131, 700], device=DEVICE)
        elif kw == "pad":
            mask = torch.ones(shape[0], shape[1], dtype=torch.bool, device=DEVICE)
            mask[1, 170:] = False
            extra["mask"] = mask
        reference = run(args, "reference", torch.float64, **extra)
        dnames = ["fp32", "bf16"] + (["fp16"] if tuple(shape[3:]) in FP16_SIZES and kw == "long" else [])
        for dname in dnames:
            try:
                got = run(args, "triton", DTYPES[dname], **extra)
            except Exception as error:  # a launch that fails (shared memory, registers) is a failed case
                failed = True
                records.append({"op": "delta_rule", "impl": "triton", "case": label, "shape": list(shape),
                                "dtype": dname, "error": f"{type(error).__name__}: {str(error)[:300]}", "pass": False})
                print(f"{label:<48}{dname:<6}FAIL  {records[-1]['error']}", flush=True)
                continue
            errors = {n: rel(a, b) for n, a, b in zip(names, got, reference)}
            ok = all(e <= TOL[dname] for e in errors.values()) and all(torch.isfinite(x).all() for x in got)
            failed |= not ok
            records.append({"op": "delta_rule", "impl": "triton", "case": label, "shape": list(shape),
                            "dtype": dname, "rel_err": {k: float(f"{v:.3g}") for k, v in errors.items()},
                            "tolerance": TOL[dname], "pass": ok})
            worst = max(errors, key=errors.get)
            print(f"{label:<48}{dname:<6}{'PASS' if ok else 'FAIL'}  worst {worst} {errors[worst]:.2e}  "
                  + " ".join(f"{n}={e:.1e}" for n, e in errors.items()), flush=True)
    write_results("triton_check_gpu", records, opts.out, opts.git)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
