"""Registers and spills of the Triton delta-rule kernels on an H100/H200 (sm_90), without a GPU.

Compiles each kernel as the wrapper launches it (bf16 inputs, Dk = Dv = 64, the launch options of
`triton_chunk.WARPS`, the products `_dot` picks) and reads `ptxas -v`. Spills are the first thing to
check when a kernel is slower than its arithmetic and memory traffic suggest. Writes
benchmarks/results/triton_registers.json.

    python benchmarks/triton_registers.py [--dot tf32]
"""

from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from common import write_results
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sinkrec.ops.delta_rule import triton_chunk as tc
from sinkrec.ops.delta_rule import triton_kernels as kern
from sinkrec.ops.delta_rule import triton_kernels_bwd as kern_bwd

KERNELS = ("prep_fwd", "state_fwd", "output_fwd", "output_bwd", "state_bwd", "prep_bwd_state", "prep_bwd_wy")
WALK_FLAGS = {"state_fwd": dict(INIT="given", ADD_U=True, STORE_STATES=True, STORE_FINAL=True),
              "state_bwd": dict(INIT="end", ADD_E=True, STORE_STATES=True, FINAL="none")}
INPUTS = {"Q", "K", "V", "O", "G_IN", "BETA", "DO", "DQ", "DK_OUT", "DV_OUT", "DG_OUT", "DB_OUT"}  # input dtype
INTS = {"T", "N", "H", "G"}


def ptxas() -> Path:
    """Triton's bundled ptxas that reads the PTX version this Triton writes."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (bin_dir / name).exists():
            return bin_dir / name
    raise FileNotFoundError(f"no ptxas in {bin_dir}")


def compile_report(name: str, dot: str, dk: int = 64, dv: int = 64) -> dict:
    fn = getattr(kern, name, None) or getattr(kern_bwd, name)
    stored = "*bf16" if dot == "bf16" else "*fp32"  # Wk and the states follow the products (triton_chunk)
    shapes = tc._shapes(torch.bfloat16, dk, dv)
    consts = {**shapes, "BS": tc._state_block(8, dv, dk), "STAGES": 2 if dk <= 128 else 1,
              "DOT": tc._state_dot(dot) if name.startswith("state") else dot, "SAVE_T": True,
              **WALK_FLAGS.get(name, {})}
    params = list(inspect.signature(fn.fn).parameters)
    signature = {p: "constexpr" if p in consts else "i32" if p in INTS else "fp32" if p == "scale"
                 else "*bf16" if p in INPUTS else stored if p in ("WK", "HS") else "*fp32" for p in params}
    constexprs = {(params.index(p),): v for p, v in consts.items() if p in params}
    warps = tc._warps(name, dk, dv)["num_warps"]
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 64), options={"num_warps": warps})
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(compiled.asm["ptx"])
        out = subprocess.run([str(ptxas()), "-arch=sm_90a", "-v", str(src), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return {"kernel": name, "dot": consts["DOT"], "num_warps": warps,
            "registers": int(re.search(r"Used (\d+) registers", text).group(1)),
            "spill_store_bytes": int(spills.group(1)), "spill_load_bytes": int(spills.group(2))}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dot", default=tc._dot(torch.bfloat16, 64), help="products of the chunk-parallel kernels")
    parser.add_argument("--out")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    records = [compile_report(name, args.dot) for name in KERNELS]
    print(f"{'kernel':<16}{'dot':<7}{'warps':>6}{'registers':>11}{'spill bytes (st/ld)':>22}")
    for r in records:
        print(f"{r['kernel']:<16}{r['dot']:<7}{r['num_warps']:>6}{r['registers']:>11}"
              f"{r['spill_store_bytes']:>14} / {r['spill_load_bytes']}")
    write_results("triton_registers", records, args.out)


if __name__ == "__main__":
    main()
