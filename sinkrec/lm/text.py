"""`sinkrec lm`: train a byte-level decoder (Sessa, attention or GDN mixer) on a text file, and generate."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SinkrecError
from ..training import checkpoint as ckpt
from ..training.runfolder import atomic_write
from ..training.trainer import pick_device
from .loop import fit_steps
from .model import LMConfig, SessaLM
from .tinytext import tiny_stories


def load_text(path: str | None) -> bytes:
    if path is None:
        return tiny_stories().encode()
    file = Path(path)
    if not file.is_file():
        raise SinkrecError(f"text file not found: {file}")
    data = file.read_bytes()
    if len(data) < 1000:
        raise SinkrecError(f"{file}: only {len(data)} bytes; need at least 1,000 to train on")
    return data


def batches(data: np.ndarray, context: int, batch_size: int, rng: np.random.Generator):
    while True:
        starts = rng.integers(0, len(data) - context - 1, batch_size)
        window = np.stack([data[s: s + context + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(window[:, :-1]), torch.from_numpy(window[:, 1:])


@torch.no_grad()
def perplexity(model: SessaLM, data: np.ndarray, context: int, device: torch.device, max_windows: int = 64) -> float:
    model.eval()
    starts = np.arange(0, len(data) - context - 1, context)[:max_windows]
    window = torch.from_numpy(np.stack([data[s: s + context + 1] for s in starts]).astype(np.int64)).to(device)
    loss = F.cross_entropy(model(window[:, :-1]).flatten(0, 1).float(), window[:, 1:].flatten())
    model.train()
    return math.exp(loss.item())


def train_lm(text: str | None, out: Path, mixer: str = "sessa", steps: int = 300, context: int = 128,
             batch_size: int = 32, lr: float = 3e-3, d_model: int = 128, n_layers: int = 2, n_heads: int = 4,
             seed: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    torch.manual_seed(seed)
    data = np.frombuffer(load_text(text), dtype=np.uint8)
    split = int(len(data) * 0.9)
    train, valid = data[:split], data[split:]
    if len(valid) < context + 2:
        raise SinkrecError(f"text too short for context {context}")
    cfg = LMConfig(vocab_size=256, d_model=d_model, n_layers=n_layers, n_heads=n_heads, mixer=mixer)
    dev = pick_device(device)
    model = SessaLM(cfg).to(dev)
    stream = batches(train, context, batch_size, np.random.default_rng(seed))
    started, history = time.perf_counter(), []

    def step_loss() -> torch.Tensor:
        x, y = (t.to(dev) for t in next(stream))
        return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())

    def log(step: int, loss: torch.Tensor) -> None:
        if step % max(1, steps // 5) == 0 or step == steps:
            history.append({"step": step, "train_loss": round(loss.item(), 4),
                            "valid_ppl": round(perplexity(model, valid, context, dev), 4)})

    fit_steps(model, step_loss, steps, lr=lr, warmup=50, after_step=log, desc=f"lm {mixer}", progress=progress)
    result = {"mixer": mixer, "steps": steps, "valid_ppl": history[-1]["valid_ppl"], "history": history,
              "seconds": round(time.perf_counter() - started, 1), "text": text or "built-in tiny stories"}
    out.mkdir(parents=True, exist_ok=True)
    payload = {"lm_config": dict(cfg.__dict__), "model": model.state_dict(), "result": ckpt.plain(result)}
    atomic_write(out / "lm.pt", ckpt.to_bytes(payload))
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def generate(checkpoint: str, prompt: str, tokens: int, temperature: float, top_k: int, seed: int) -> str:
    path = Path(checkpoint)
    path = path / "lm.pt" if path.is_dir() else path
    if not path.is_file():
        raise SinkrecError(f"LM checkpoint not found: {path}")
    payload = ckpt.read(path, kind=None)  # tensors and plain data only: a crafted file runs nothing
    if not isinstance(payload.get("lm_config"), dict) or not isinstance(payload.get("model"), dict):
        raise SinkrecError(f"{path} is not a `sinkrec lm` checkpoint")
    try:
        model = SessaLM(LMConfig(**payload["lm_config"]))
    except Exception as exc:  # noqa: BLE001 - a damaged config must not surface as a traceback
        raise SinkrecError(f"{path}: cannot build its model ({type(exc).__name__}: {exc})") from None
    ckpt.load_weights(model, payload["model"], str(path))
    model.eval()
    ids = torch.tensor([list(prompt.encode() or b"\n")])
    out = model.generate(ids, tokens, temperature, top_k, torch.Generator().manual_seed(seed))
    return bytes(out[0].tolist()).decode("utf-8", errors="replace")
