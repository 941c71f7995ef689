"""Train and score one decoder on SymbolSoup or Diffuse MQAR (spec/sessa.md §5).

Same decoder, optimiser, steps and data for every mixer; only the sequence mixer differs. The
benchmark script (benchmarks/sessa_tasks.py) runs the (task, mixer, seed) grid and the table.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .loop import fit_steps
from .model import LMConfig, SessaLM
from .tasks import LABEL0, SOUP_VOCAB, diffuse_mqar, mqar_vocab, symbol_soup

MIXERS = ("sessa", "attention", "gdn")
TASKS = ("symbolsoup", "mqar")


def task_data(task: str, seed: int, train_lag: int):
    """→ (vocabulary size, (train tokens, train targets), {test name: (tokens, targets)})."""
    if task == "symbolsoup":
        (xtr, ytr), (xte, yte) = symbol_soup(20000, seed=seed), symbol_soup(2000, seed=10_000 + seed)
        return SOUP_VOCAB, (xtr, ytr), {"test": (xte, yte)}
    if task != "mqar":
        raise ValueError(f"task must be one of {TASKS}, got '{task}'")
    train = diffuse_mqar(20000, lag=train_lag, seed=seed)
    tests = {f"lag{lag}": diffuse_mqar(1000, lag=lag, seed=10_000 + seed + lag)
             for lag in (train_lag, 2 * train_lag, 4 * train_lag)}
    return mqar_vocab()["size"], train, tests


def loss_and_acc(model: SessaLM, task: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SymbolSoup: the label read at the last position; MQAR: the value tokens of the query block."""
    logits = model(x)
    if task == "symbolsoup":
        labels = logits[:, -1, LABEL0:LABEL0 + 20].float()
        return F.cross_entropy(labels, y), (labels.argmax(-1) == y).float().mean()
    flat, target = logits.flatten(0, 1).float(), y.flatten()
    mask = target != -100
    return F.cross_entropy(flat, target, ignore_index=-100), (flat.argmax(-1)[mask] == target[mask]).float().mean()


@torch.no_grad()
def accuracy(model: SessaLM, task: str, x: np.ndarray, y: np.ndarray, device: torch.device, batch: int = 200) -> float:
    model.eval()
    hits = []
    for i in range(0, len(x), batch):
        xb, yb = torch.from_numpy(x[i:i + batch]).to(device), torch.from_numpy(y[i:i + batch]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            _, acc = loss_and_acc(model, task, xb, yb)
        hits.append(acc.item() * len(xb))
    model.train()
    return sum(hits) / len(x)


def train_task(task: str, mixer: str, seed: int, steps: int, device: str, out: Path, d_model: int = 64,
               train_lag: int = 64) -> dict:
    """Train one (task, mixer, seed) run; save its checkpoint in `out`; return its results record."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    vocab, (xtr, ytr), tests = task_data(task, seed, train_lag)
    cfg = LMConfig(vocab_size=vocab, d_model=d_model, n_layers=2, n_heads=4, mixer=mixer, tie_weights=True)
    model = SessaLM(cfg).to(dev)
    rng = np.random.default_rng(seed)
    started = time.time()

    def step_loss() -> torch.Tensor:
        idx = rng.integers(0, len(xtr), 64)
        xb, yb = torch.from_numpy(xtr[idx]).to(dev), torch.from_numpy(ytr[idx]).to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            return loss_and_acc(model, task, xb, yb)[0]

    fit_steps(model, step_loss, steps, lr=1e-3, warmup=100)
    result = {"task": task, "model": mixer, "seed": seed, "steps": steps,
              "params": sum(p.numel() for p in model.parameters()), "train_seconds": round(time.time() - started, 1),
              "metrics": {name: round(accuracy(model, task, x, y, dev), 4) for name, (x, y) in tests.items()}}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"lm_config": cfg.__dict__, "model": model.state_dict(), "result": result},
               out / f"{task}-{mixer}-s{seed}.pt")
    return result
