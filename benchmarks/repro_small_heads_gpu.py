"""Which launch faults with GDN at head dim 16 (n_heads 4, d_model 64) on the GPU (issue #24's study faults).

Every device fault the tuned study recorded without MPS (2026-12-05, ML-1M-1024, H100) came from GDN trials with
4 heads at d_model 64 (Dk = Dv = 16), 10-20 s into training. This runs each case in its own process (a fault
poisons the CUDA context) with CUDA_LAUNCH_BLOCKING=1, so a fault names the launch that made it, and checks the
outputs and gradients that do come back against the chunked path in float64.

    python benchmarks/repro_small_heads_gpu.py OUT.json               # the current dispatch
    python benchmarks/repro_small_heads_gpu.py OUT.json --fused old   # the fused backward wherever it fits
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from common import write_results

# (label, B, T, H, D, dtype, strided): the study's training batch, evaluation-sized batches, other head dims
CASES = [("train 64x1024 H4 D16 bf16", 64, 1024, 4, 16, "bf16", True),
         ("train 64x1024 H4 D16 fp32", 64, 1024, 4, 16, "fp32", True),
         ("eval 512x1024 H4 D16 bf16", 512, 1024, 4, 16, "bf16", True),
         ("train 64x200 H4 D16 bf16", 64, 200, 4, 16, "bf16", True),
         ("train 64x1024 H1 D64 bf16", 64, 1024, 1, 64, "bf16", True),
         ("train 64x1024 H2 D32 bf16 (SinkRec's TDGD, GDN with 2 heads)", 64, 1024, 2, 32, "bf16", True),
         ("train 64x200 H2 D32 bf16", 64, 200, 2, 32, "bf16", True),
         ("train 128x200 H2 D32 fp32", 128, 200, 2, 32, "fp32", True)]
# --fused old: the rule of e81a9d7..f161462 (fused wherever one block of Dk and of Dv), to tell whether the
# study's trials at head dims 16 and 32 ran on a faulty kernel even where it did not fault


def one(b, t, h, d, dtype, strided, fused: str) -> dict:
    import torch
    import torch.nn.functional as F

    from sinkrec.ops.delta_rule import delta_rule, triton_chunk

    if fused == "old":
        triton_chunk.fused_backward = lambda shapes: shapes["NK"] == 1 and shapes["NV"] == 1

    dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    gen = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, device="cuda", dtype=torch.float64)  # noqa: E731
    # q, k, v as heads of one projection: strided views, as GatedDeltaNet passes them
    qkv = r(b, t, 3, h, d) if strided else None
    q, k, v = (qkv[:, :, i] if strided else r(b, t, h, d) for i in range(3))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    g, beta = F.logsigmoid(r(b, t, h) + 3), torch.sigmoid(r(b, t, h))
    mask = torch.arange(t, device="cuda")[None, :] >= (torch.arange(b, device="cuda")[:, None] * 7) % t  # left padding
    grad = r(b, t, h, d)
    results = {}
    for impl, precision in (("triton", dt), ("chunked", torch.float64)):
        xs = [x.to(precision).detach().requires_grad_() for x in (q, k, v, g, beta)]
        o, _ = delta_rule(*xs, mask=mask, impl=impl)
        grads = torch.autograd.grad(o, xs, grad.to(o.dtype))
        torch.cuda.synchronize()
        results[impl] = [o.double(), *(x.double() for x in grads)]
    err = {name: float((a - e).norm() / e.norm().clamp_min(1e-30))
           for name, a, e in zip(("o", "dq", "dk", "dv", "dg", "dbeta"), results["triton"], results["chunked"])}
    return {"rel_err": err}


def _failure(stderr: str) -> dict:
    """The traceback's error line and the last kernel launch in it (CUDA_LAUNCH_BLOCKING: the one that faulted)."""
    lines = stderr.strip().splitlines() or [""]
    launches = [line.strip().split("[")[0] for line in lines if re.search(r"kern\w*\.\w+\[", line)]
    return {"error": lines[-1].strip(), "launch": launches[-1] if launches else ""}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="JSON file for the records")
    parser.add_argument("--fused", choices=("current", "old"), default="current",
                        help="old: the fused backward wherever one block of Dk and of Dv fits (e81a9d7..f161462)")
    parser.add_argument("--git", default="", help="commit of the measured tree (.git may not travel)")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # one case, in its own process
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.case is not None:
        print(json.dumps(one(*CASES[args.case][1:], args.fused)))
        return 0
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    records = []
    for index, case in enumerate(CASES):
        proc = subprocess.run([sys.executable, __file__, args.out, "--fused", args.fused, "--case", str(index)],
                              capture_output=True, text=True, env=env, timeout=120)
        record = {"case": case[0], "fused": args.fused, "rc": proc.returncode}
        if proc.returncode == 0:
            record.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            record.update(_failure(proc.stderr))
        records.append(record)
        print(json.dumps(record)[:1500], flush=True)
        write_results("repro_small_heads", records, args.out, args.git)  # after each case: a crash keeps the rest
    return 0


if __name__ == "__main__":
    sys.exit(main())
