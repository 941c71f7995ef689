"""Data-parallel scaling: training tokens/s on 1 and N GPUs (DDP under torchrun), weak scaling.

Each rank runs the throughput benchmark's training step (d=64, T=8192, B=4 per rank, bf16,
full-softmax CE, AdamW) inside DistributedDataParallel; efficiency = tokens/s on N ÷ (N × on 1).
The driver launches `torchrun --standalone --nproc-per-node N` once per N and writes
benchmarks/results/scaling.json and a markdown table.

    python benchmarks/scaling.py --gpus 1,2 --models sasrec,sinkrec
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, write_results

B, T = 4, 8192


def worker(args: argparse.Namespace) -> None:
    """One rank: time `--steps` DDP training steps per model; rank 0 writes the records."""
    import torch.distributed as dist
    from throughput import MODELS, N_ITEMS, batch, train_step_fn

    from sinkrec.models import build_model

    dist.init_process_group("nccl")  # also with one process, so 1 GPU runs the same DDP step
    rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    records = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(MODELS[name], N_ITEMS, 32768).cuda().train()
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
        step = train_step_fn(ddp, torch.optim.AdamW(model.parameters(), lr=1e-3), batch(B, T), model)
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        dist.barrier()
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        dist.barrier()
        ms = (time.perf_counter() - started) / args.steps * 1e3
        records.append({"model": name, "gpus": world, "B_per_gpu": B, "T": T, "ms_per_step": round(ms, 2),
                        "tokens_per_s": round(world * B * T / ms * 1e3)})
    if rank == 0:
        Path(args.worker_out).write_text(json.dumps(records))
    dist.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default="1,2")
    parser.add_argument("--models", default="sasrec,sinkrec")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out")
    parser.add_argument("--git", default="")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)  # set by the driver for each torchrun
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.worker_out:
        worker(args)
        return
    records = []
    for n in map(int, args.gpus.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "records.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                   __file__, "--models", args.models, "--steps", str(args.steps), "--worker-out", str(out)]
            env = {**os.environ, "OMP_NUM_THREADS": "4",
                   "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
            subprocess.run(cmd, check=True, cwd=Path(__file__).parent, env=env)
            records += json.loads(out.read_text())
        print(records[-1], flush=True)
    one = {r["model"]: r["tokens_per_s"] for r in records if r["gpus"] == 1}
    for r in records:
        if r["model"] in one:
            r["efficiency"] = round(r["tokens_per_s"] / (r["gpus"] * one[r["model"]]), 3)
    path = write_results("scaling", records, args.out, args.git)
    lines = ["| model | GPUs | ms/step | tokens/s | efficiency |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['gpus']} | {r['ms_per_step']} | {r['tokens_per_s'] / 1e6:.2f} M | "
              f"{r.get('efficiency', float('nan')):.0%} |" for r in records]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
