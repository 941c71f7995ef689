"""What a SinkRec training step costs against Gated DeltaNet of the same width and depth, on the CPU.

Same width (d=64) and depth (GDN: 2 layers; SinkRec: one block looped twice), ML-1M's catalogue
(3,416 items), full-softmax CE, AdamW, eager fp32, dropout 0.1. For each model: the median time of a
full training step (forward, loss, backward, optimizer), its ratio to GDN's, and the forward time of
each submodule (forward hooks; a looped block's modules are summed over loops). Variants:
- `gdn`: the plain baseline; `sinkrec`: the default config; `sinkrec-nomem`: SinkRec without memory;
- `sinkrec-old`: the memory sizes of the earlier default (3 levels × 256 codes, prototype slots).
Prints a table and writes benchmarks/results/sinkrec_cost.json.

    python benchmarks/sinkrec_cost.py [--batch 32] [--length 200] [--steps 8] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from common import write_results

from sinkrec.batch import Batch
from sinkrec.models import build_model
from sinkrec.training.losses import full_softmax_ce

N_ITEMS = 3416
VARIANTS = {
    "gdn": {"name": "gdn", "d_model": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.1},
    "sinkrec": {"name": "sinkrec", "d_model": 64, "n_blocks": 1, "loops": 2, "n_heads": 2, "dropout": 0.1},
    "sinkrec-nomem": {"name": "sinkrec", "d_model": 64, "n_blocks": 1, "loops": 2, "n_heads": 2, "dropout": 0.1,
                      "use_memory": False},
    "sinkrec-old": {"name": "sinkrec", "d_model": 64, "n_blocks": 1, "loops": 2, "n_heads": 2, "dropout": 0.1,
                    "rvq_levels": 3, "rvq_codes": 256, "prototype_levels": 1},
}


def make_batch(b: int, t: int, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (b, t), generator=gen)
    times = torch.cumsum(torch.rand(b, t, generator=gen, dtype=torch.float64) * 3600, 1)
    return Batch(items=items, lengths=torch.full((b,), t), timestamps=times,
                 targets=torch.randint(1, N_ITEMS + 1, (b, t), generator=gen))


def module_timer(model: torch.nn.Module) -> tuple[dict[str, float], list]:
    """Forward hooks summing wall time per named submodule (two levels below a block)."""
    totals: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}
    handles = []
    for name, module in model.named_modules():
        parts = name.split(".")
        keep = name in ("item_embedding", "memory", "memory.rvq", "memory.pattern") or (
            len(parts) == 3 and parts[0] == "blocks")
        if not keep:
            continue
        label = ".".join(parts[2:]) if parts[0] == "blocks" else name
        handles.append(module.register_forward_pre_hook(lambda m, _a: starts.__setitem__(id(m), time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda m, _a, _o, label=label: totals.__setitem__(label, totals[label] + time.perf_counter()
                                                              - starts[id(m)])))
    return totals, handles


def build(spec: dict, data: Batch):
    """Model, optimizer and a training-step function returning (forward s, step s)."""
    torch.manual_seed(0)
    model = build_model(spec, N_ITEMS, data.items.shape[1]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> tuple[float, float]:
        start = time.perf_counter()
        out = model(data)
        loss = full_softmax_ce(out.hidden, data.targets, model.item_embedding.weight) + sum(out.losses.values())
        forward = time.perf_counter() - start
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return forward, time.perf_counter() - start
    return model, step


def measure(specs: dict[str, dict], data: Batch, steps: int) -> list[dict]:
    """Steps of all models interleaved (round robin), so load from elsewhere hits them alike."""
    built = {name: build(spec, data) for name, spec in specs.items()}
    for _ in range(2):  # warm-up (k-means initialisation on the first step)
        for _, step in built.values():
            step()
    times: dict[str, list] = {name: [] for name in specs}
    for _ in range(steps):
        for name, (_, step) in built.items():
            times[name].append(step())
    records = []
    for name, (model, step) in built.items():
        totals, handles = module_timer(model)
        for _ in range(max(2, steps // 2)):
            step()
        for h in handles:
            h.remove()
        n = max(2, steps // 2)
        fwd = sorted(t[0] for t in times[name])
        full = sorted(t[1] for t in times[name])
        records.append({"model": name, "config": specs[name], "B": data.items.shape[0], "T": data.items.shape[1],
                        "step_ms": round(full[len(full) // 2] * 1e3, 1),
                        "forward_ms": round(fwd[len(fwd) // 2] * 1e3, 1),
                        "modules_forward_ms": {k: round(v / n * 1e3, 2) for k, v in sorted(totals.items())}})
    return records


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script, importable without running it (docs/generate.py --check)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--models", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None, help="results path (default benchmarks/results/sinkrec_cost.json)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = make_batch(args.batch, args.length)
    records = measure({name: VARIANTS[name] for name in args.models.split(",")}, data, args.steps)
    base = next((r["step_ms"] for r in records if r["model"] == "gdn"), None)
    print(f"{'model':16s} {'step ms':>9s} {'fwd ms':>8s} {'× GDN':>6s}")
    for r in records:
        r["ratio_to_gdn"] = round(r["step_ms"] / base, 3) if base else None
        print(f"{r['model']:16s} {r['step_ms']:9.1f} {r['forward_ms']:8.1f} {r['ratio_to_gdn'] or 0:6.2f}")
    print("\nforward ms per module (summed over loops):")
    for r in records:
        print(f"  {r['model']}: " + ", ".join(f"{k} {v}" for k, v in r["modules_forward_ms"].items()))
    print("written:", write_results("sinkrec_cost", records, args.out))


if __name__ == "__main__":
    main()
