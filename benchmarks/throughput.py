"""Training-step throughput and forward cost per token of the recommenders on the GPU.

Equal width (d=64) and depth (two mixer applications: SASRec and GDN with 2 layers, SinkRec with
one block looped twice), catalogue of 3,416 items (ML-1M), full-softmax CE, bf16 autocast, AdamW.
- train: tokens/s of a full training step at T=8192 (B=4);
- forward: ms per 1k tokens at T ∈ {1024, 4096, 8192, 32768} with B·T = 32,768 tokens.
With --compile, each model's training step is also timed under torch.compile (as `train.compile`
runs it), after checking on the GPU that the compiled step gives the eager loss and gradients.
Writes benchmarks/results/throughput.json and a markdown table.

    python benchmarks/throughput.py [--compile]
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import gpu_time_ms, peak_mib, write_results
from experiments import SPEED_MODELS, SPEED_N_ITEMS
from torch._dynamo.utils import counters

from sinkrec.batch import Batch
from sinkrec.models import build_model
from sinkrec.training.losses import full_softmax_ce
from sinkrec.training.trainer import raise_recompile_limit

N_ITEMS, MODELS = SPEED_N_ITEMS, SPEED_MODELS


def batch(b, t):
    items = torch.randint(1, N_ITEMS + 1, (b, t), device="cuda")
    times = torch.cumsum(torch.rand(b, t, device="cuda", dtype=torch.float64) * 3600, 1)
    return Batch(items=items, lengths=torch.full((b,), t, device="cuda"), timestamps=times,
                 targets=torch.randint(1, N_ITEMS + 1, (b, t), device="cuda"))


def train_step_fn(encoder, opt, data, model=None):
    """`encoder` runs the forward (the model, or its compiled wrapper); `model` owns the weights."""
    model = model or encoder

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = encoder(data)
            loss = full_softmax_ce(out.hidden, data.targets, model.item_embedding.weight)
            loss = loss + sum(out.losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def train_record(name: str, compiled: bool, step) -> dict:
    ms = gpu_time_ms(step, warmup=3, repeats=10)
    return {"op": "train_step", "model": name, "compiled": compiled, "B": 4, "T": 8192, "dtype": "bf16",
            "ms": round(ms, 2), "tokens_per_s": round(4 * 8192 / ms * 1e3), "peak_mib": round(peak_mib(step), 1)}


def forward_fn(encode, data):
    """`encode`: the model's encode, or the compiled model (whose forward is encode)."""
    @torch.no_grad()
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            encode(data)
    return step


def compiled_step_error(name: str, mode: str) -> dict:
    """Loss and gradient of one step, eager against compiled (dropout off, same weights, bf16)."""
    torch.manual_seed(0)
    eager = build_model({**MODELS[name], "dropout": 0.0}, N_ITEMS, 32768).cuda().train()
    data = batch(2, 2048)
    with torch.no_grad():
        eager.encode(data)  # SinkRec: k-means initialisation on the first training batch
    if getattr(eager, "memory", None) is not None:
        eager.memory.rvq.eval()  # no EMA update, so both copies keep the same codebooks
    compiled = copy.deepcopy(eager)

    def loss_and_grads(model, forward):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = forward(data)
            loss = full_softmax_ce(out.hidden, data.targets, model.item_embedding.weight)
        loss.backward()
        grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        return loss.float(), grads, out.codes

    loss, grads, codes = loss_and_grads(eager, eager)
    torch._dynamo.reset()
    counters.clear()
    loss2, grads2, codes2 = loss_and_grads(compiled, torch.compile(compiled, dynamic=False, mode=mode))
    errors = {"loss_rel_error": float((loss2 - loss).abs() / loss.abs()),
              "grad_rel_error": float((grads2 - grads).norm() / grads.norm()),
              # 1 = the whole forward is one graph (no graph break, one CUDA graph under reduce-overhead)
              "dynamo_graphs": int(counters["stats"]["unique_graphs"]),
              "graph_breaks": int(sum(counters["graph_break"].values()))}
    if codes is not None:
        # a near-tie in a code's distance can round either way; each such position changes the
        # memory read there, so the gradient error is only meaningful next to this count
        errors["positions_with_other_codes"] = int((codes != codes2).any(-1).sum())
    return errors


def print_profile(label: str, step) -> None:
    """Top CUDA kernels of three calls of `step` after three warm-up calls (where the time goes)."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(f"profile {label}, 3 calls")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))


def profile(name: str, compiled: bool, forward: bool) -> None:
    """The training step at T=8192, or (forward) the eager forward at B=4, T=8192 and B=1, T=32768."""
    torch.manual_seed(0)
    model = build_model(MODELS[name], N_ITEMS, 32768).cuda().train()
    encoder = torch.compile(model, dynamic=False) if compiled else model
    step = train_step_fn(encoder, torch.optim.AdamW(model.parameters(), lr=1e-3), batch(4, 8192), model)
    if not forward:
        return print_profile(f"{name}{' (compiled)' if compiled else ''}: train step B=4 T=8192", step)
    step()  # SinkRec: k-means initialisation on a training batch
    model.eval()
    for b, t in ((4, 8192), (1, 32768)):
        print_profile(f"{name}: forward B={b} T={t}", forward_fn(model.encode, batch(b, t)))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--models", default="sasrec,gdn,sinkrec")
    parser.add_argument("--git", default="", help="commit of the measured tree (.git may not travel)")
    parser.add_argument("--profile", action="store_true", help="print each model's top kernels and exit")
    parser.add_argument("--profile-forward", action="store_true", help="--profile of the forward at two shapes")
    parser.add_argument("--compile", action="store_true", help="also time the training step under torch.compile")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (e.g. reduce-overhead)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.profile or args.profile_forward:
        for name in args.models.split(","):
            profile(name, args.compile, args.profile_forward)
        return
    raise_recompile_limit(64)  # one graph per shape and mode: more than the default limit
    records = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(MODELS[name], N_ITEMS, 32768).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        data = batch(4, 8192)
        records.append(train_record(name, False, train_step_fn(model, opt, data)))
        print(records[-1], flush=True)
        if args.compile:
            compiled = torch.compile(model, dynamic=False, mode=args.compile_mode)
            records.append({**train_record(name, True, train_step_fn(compiled, opt, data, model)),
                            "compile_mode": args.compile_mode, **compiled_step_error(name, args.compile_mode)})
            print(records[-1], flush=True)
        model.eval()
        # eager, then (--compile) compiled: the eager forward of the small models is bound by the host,
        # so its time per token shows the launches; the compiled one shows the GPU's work
        for compiled_forward in (False, True) if args.compile else (False,):
            encode = torch.compile(model, dynamic=False, mode=args.compile_mode) if compiled_forward else model.encode
            for t in (1024, 4096, 8192, 32768):
                b = 32768 // t
                ms = gpu_time_ms(forward_fn(encode, batch(b, t)), warmup=3, repeats=10)
                records.append({"op": "forward", "model": name, "compiled": compiled_forward, "B": b, "T": t,
                                "dtype": "bf16", "ms": round(ms, 3), "us_per_1k_tokens": round(ms / (b * t) * 1e6, 2)})
                print(records[-1], flush=True)
        del model, opt
        torch.cuda.empty_cache()
    path = write_results("throughput", records, args.out, args.git)
    lines = ["| model | train tokens/s (T=8192) | compiled | fwd µs/1k tok (eager / compiled) T=1024 | T=4096 | "
             "T=8192 | T=32768 |",
             "|---|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        train = {r["compiled"]: r["tokens_per_s"] / 1e6 for r in records if r["model"] == name
                 and r["op"] == "train_step"}
        fwd = {(r["compiled"], r["T"]): r["us_per_1k_tokens"] for r in records
               if r["model"] == name and r["op"] == "forward"}
        lines.append(f"| {name} | {train[False]:.2f} M | " + (f"{train[True]:.2f} M" if True in train else "—")
                     + " | " + " | ".join(" / ".join(f"{fwd[c, t]:.1f}" for c in (False, True) if (c, t) in fwd)
                                          for t in (1024, 4096, 8192, 32768)) + " |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
