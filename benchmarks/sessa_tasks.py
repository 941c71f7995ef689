"""Sessa vs Transformer vs gated-delta-rule mixer on SymbolSoup and Diffuse MQAR (spec/sessa.md §5).

Same decoder, same optimiser, steps and data; only the sequence mixer differs. Each (task, mixer,
seed) trains in its own process (`--parallel`), so one GPU holds several. Writes
benchmarks/results/sessa_tasks.json and a mean ± std table; checkpoints go to runs/sessa_tasks/.

    python benchmarks/sessa_tasks.py --device cuda --parallel 12 --steps 1500
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_results  # noqa: E402

from sinkrec.data.sessa_tasks import LABEL0, SOUP_VOCAB, diffuse_mqar, mqar_vocab, symbol_soup  # noqa: E402
from sinkrec.models.lm import LMConfig, SessaLM  # noqa: E402

MIXERS = ("sessa", "attention", "gdn")


def data(task: str, seed: int, train_lag: int):
    if task == "symbolsoup":
        (xtr, ytr), (xte, yte) = symbol_soup(20000, seed=seed), symbol_soup(2000, seed=10_000 + seed)
        return SOUP_VOCAB, (xtr, ytr), {"test": (xte, yte)}
    train = diffuse_mqar(20000, lag=train_lag, seed=seed)
    tests = {f"lag{lag}": diffuse_mqar(1000, lag=lag, seed=10_000 + seed + lag)
             for lag in (train_lag, 2 * train_lag, 4 * train_lag)}
    return mqar_vocab()["size"], train, tests


def loss_and_acc(model, task, x, y):
    logits = model(x)
    if task == "symbolsoup":
        labels = logits[:, -1, LABEL0:LABEL0 + 20].float()
        return F.cross_entropy(labels, y), (labels.argmax(-1) == y).float().mean()
    flat, target = logits.flatten(0, 1).float(), y.flatten()
    mask = target != -100
    return F.cross_entropy(flat, target, ignore_index=-100), (flat.argmax(-1)[mask] == target[mask]).float().mean()


@torch.no_grad()
def evaluate(model, task, x, y, device, batch=200):
    model.eval()
    hits = []
    for i in range(0, len(x), batch):
        xb, yb = torch.from_numpy(x[i:i + batch]).to(device), torch.from_numpy(y[i:i + batch]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            _, acc = loss_and_acc(model, task, xb, yb)
        hits.append(acc.item() * len(xb))
    model.train()
    return sum(hits) / len(x)


def train_one(task: str, mixer: str, seed: int, steps: int, device: str, out: Path, d_model: int, train_lag: int):
    torch.manual_seed(seed)
    dev = torch.device(device)
    vocab, (xtr, ytr), tests = data(task, seed, train_lag)
    cfg = LMConfig(vocab_size=vocab, d_model=d_model, n_layers=2, n_heads=4, mixer=mixer, tie_weights=True)
    model = SessaLM(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    rng = np.random.default_rng(seed)
    started = time.time()
    for _ in range(steps):
        idx = rng.integers(0, len(xtr), 64)
        xb, yb = torch.from_numpy(xtr[idx]).to(dev), torch.from_numpy(ytr[idx]).to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss, _ = loss_and_acc(model, task, xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    result = {"task": task, "model": mixer, "seed": seed, "steps": steps,
              "params": sum(p.numel() for p in model.parameters()), "train_seconds": round(time.time() - started, 1),
              "metrics": {name: round(evaluate(model, task, x, y, dev), 4) for name, (x, y) in tests.items()}}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"lm_config": cfg.__dict__, "model": model.state_dict(), "result": result},
               out / f"{task}-{mixer}-s{seed}.pt")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="symbolsoup,mqar")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--train-lag", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--out", default="runs/sessa_tasks")
    parser.add_argument("--results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: task,mixer,seed for a worker process
    args = parser.parse_args()
    if args.one:
        task, mixer, seed = args.one.split(",")
        print(json.dumps(train_one(task, mixer, int(seed), args.steps, args.device, Path(args.out), args.d_model,
                                   args.train_lag)))
        return
    jobs = [(t, m, int(s)) for t in args.tasks.split(",") for m in MIXERS for s in args.seeds.split(",")]

    def launch(job):
        cmd = [sys.executable, __file__, "--one", ",".join(map(str, job)), "--steps", str(args.steps),
               "--device", args.device, "--out", args.out, "--d-model", str(args.d_model),
               "--train-lag", str(args.train_lag)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"FAILED {job}: {proc.stderr[-600:]}", flush=True)
            return {"task": job[0], "model": job[1], "seed": job[2], "error": proc.stderr[-1000:]}
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"done {job}: {record['metrics']} ({record['train_seconds']}s)", flush=True)
        return record

    with ThreadPoolExecutor(args.parallel) as pool:
        records = list(pool.map(launch, jobs))
    path = write_results("sessa_tasks", records, args.results)
    lines = ["| task | metric | model | seeds | accuracy | params |", "|---|---|---|---|---|---|"]
    for task in args.tasks.split(","):
        done = [r for r in records if r["task"] == task and "metrics" in r]
        for metric in (done[0]["metrics"] if done else {}):
            for mixer in MIXERS:
                values = [r["metrics"][metric] for r in done if r["model"] == mixer]
                if values:
                    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
                    params = next(r["params"] for r in done if r["model"] == mixer)
                    lines.append(f"| {task} | {metric} | {mixer} | {len(values)} | "
                                 f"{statistics.mean(values):.4f}{spread} | {params:,} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
