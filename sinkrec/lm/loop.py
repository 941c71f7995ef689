"""The optimisation loop shared by the byte-level LM and the long-context tasks.

Both train a small decoder for a fixed number of steps with AdamW, linear warm-up times a cosine
decay, and gradient clipping; only how a step's loss is computed differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm


def warmup_cosine(warmup: int, steps: int) -> Callable[[int], float]:
    """LR factor: min(1, (s + 1) / warmup) · ½(1 + cos(π · min(1, s / steps)))."""
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))


def fit_steps(model: torch.nn.Module, step_loss: Callable[[], torch.Tensor], steps: int, *, lr: float,
              warmup: int, weight_decay: float = 0.01, clip: float = 1.0,
              after_step: Callable[[int, torch.Tensor], None] | None = None, desc: str = "",
              progress: bool = False) -> None:
    """Run `steps` optimiser steps; `step_loss()` draws a batch and returns its loss.

    Args:
        model: the module whose parameters are trained.
        step_loss: computes one step's loss (under autocast if the caller wants it).
        steps: number of optimiser steps.
        lr: peak learning rate of AdamW.
        warmup: steps of linear warm-up (multiplied with the cosine decay).
        weight_decay: AdamW weight decay.
        clip: gradient-norm clipping threshold.
        after_step: called with (step, loss) after each step (1-based), e.g. to evaluate.
        desc: progress-bar label.
        progress: show a progress bar.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warmup, steps))
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress):
        loss = step_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step(step, loss)
