"""The training loop: epochs over users, validation every epoch, early stopping, checkpoints.

Model selection uses the validation metric (NDCG@10 by default); the test split is scored once,
with the best checkpoint, at the end. Resuming a run folder continues exactly: the shuffling
order depends only on (seed, epoch), and RNG states are restored. Files: see `runfolder`.
A NaN or inf loss or gradient stops training (NonFiniteError) before anything is saved.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..config import Config
from ..data import Dataset
from ..data.batching import train_batches, trainable_users
from ..errors import CheckpointError, ConfigError, NonFiniteError
from ..eval.evaluate import evaluate_sums, metrics_from_sums
from ..models import build_model
from ..nn.attention import without_cudnn_attention
from . import checkpoint, lock, runfolder
from .distributed import DistInfo, all_reduce_sum, barrier, setup
from .fingerprint import check_data, check_resume_config, data_fingerprint
from .losses import full_softmax_ce, sampled_softmax_ce

log = logging.getLogger(__name__)
COMPILE_WIDTH = 64  # with train.compile, batch widths are rounded up to a multiple of this


def raise_recompile_limit(graphs: int) -> None:
    """Let torch.compile keep at least this many graphs per function (one per static shape)."""
    dynamo = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(dynamo, name, max(getattr(dynamo, name), graphs))


def pick_device(name: str) -> torch.device:
    """The torch device for a config's `auto | cpu | cuda | cuda:N`; CUDA without a GPU is a ConfigError."""
    from ..experiment import check_device

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    return torch.device(name)


def lr_lambda(cfg_schedule: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg_schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor  # the schedule's name is checked when the config is built (TrainConfig)


@dataclass
class TrainResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    output_dir: Path = Path(".")


class Trainer:
    def __init__(self, cfg: Config, data: Dataset, dist_info: DistInfo | None = None):
        self.cfg = cfg
        self.data = data
        self.dist = dist_info or setup(cfg.train.device)
        self.device = pick_device(cfg.train.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out = Path(cfg.output_dir)
        torch.manual_seed(cfg.train.seed)  # same seed on every rank: identical initial weights
        self.model = build_model(cfg.model, data.store.n_items, cfg.data.max_len).to(self.device)
        self.train_model = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        # the training forward: the model, its DDP wrapper, or their compiled form; returns `Encoded`
        self.forward = self._compiled(self.train_model) if cfg.train.compile else self.train_model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        self.users = trainable_users(data.split)
        self.steps_per_epoch = max(1, math.ceil(len(self.users) / cfg.train.batch_size))
        self.warnings = [few] if (few := few_steps(len(self.users), cfg.train.batch_size)) else []
        for text in self.warnings if self.dist.main else []:
            log.warning(text)
        self.baselines: dict[str, Any] | None = None  # pop / itemknn scores (api.train), kept in metrics.json
        total = self.steps_per_epoch * cfg.train.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.train.schedule, cfg.train.warmup_steps, total))
        self.autocast = self.device.type == "cuda" and cfg.train.bf16
        self.epoch = 0
        self.best: dict[str, Any] = {"epoch": 0, "metric": -math.inf, "valid": {}}
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.committed = 0  # the epoch the run folder's manifest names (0: none yet)
        self.fingerprint = data_fingerprint(cfg.data, data.store)
        self.writer = self._tensorboard() if cfg.train.tensorboard and self.dist.main else None
        # the generator's true distribution does not change during training: score it once
        self.oracle = oracle_metrics(data, cfg) if data.oracle is not None and self.dist.main else None

    def _compiled(self, module: torch.nn.Module):
        """torch.compile of the training forward: fuses the many small element-wise kernels and
        removes most Python launch overhead. Static shapes (one graph per batch shape); the
        rounded batch widths bound their number, and the recompile limit is raised to match."""
        mode = self.cfg.train.compile_mode  # checked when the config is built (TrainConfig)
        shapes = math.ceil(self.cfg.data.max_len / COMPILE_WIDTH) + 1  # full batches per width, the last batch
        raise_recompile_limit(shapes + 2)
        return torch.compile(module, dynamic=False, mode=mode)

    # ---- state -------------------------------------------------------------------------
    def _model_payload(self) -> dict[str, Any]:
        return {"format": checkpoint.MODEL_FORMAT, "version": checkpoint.VERSION, "epoch": self.epoch,
                "config": checkpoint.plain(self.cfg.to_dict()), "model": self.model.state_dict(),
                "n_items": int(self.data.store.n_items), "item_ids": [str(i) for i in self.data.store.item_ids],
                "dataset": self.data.name, "fingerprint": self.fingerprint}

    def _state_payload(self) -> dict[str, Any]:
        return {"format": checkpoint.STATE_FORMAT, "version": checkpoint.VERSION, "epoch": self.epoch,
                "optimizer": self.optimizer.state_dict(), "scheduler": checkpoint.plain(self.scheduler.state_dict()),
                "rng": checkpoint.rng_state(), "best": checkpoint.plain(self.best), "bad_epochs": self.bad_epochs,
                "history": checkpoint.plain(self.history), "train_seconds": float(self.train_seconds)}

    def resume(self, path: str | Path) -> None:
        """Continue the run in a folder (or a file in it): only what its manifest names is trusted."""
        folder, manifest = runfolder.resolve(path)
        if not folder.is_dir():
            raise CheckpointError(f"--resume {path}: not a run folder (resuming needs the folder's "
                                  f"{runfolder.MANIFEST} and state file, not a model file alone)")
        if manifest is None:
            log.info("%s holds no finished epoch: starting from epoch 0", folder)
            return
        model, state = runfolder.load_training(folder, manifest)
        where = f"{folder} (epoch {state['epoch']})"
        check_resume_config(model["config"], checkpoint.plain(self.cfg.to_dict()), str(folder))
        check_data(model["fingerprint"], self.fingerprint, where, "resume it")
        checkpoint.load_weights(self.model, model["model"], where)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            checkpoint.set_rng_state(state["rng"])
        except Exception as exc:  # noqa: BLE001 - a state file that does not fit this model/optimizer
            raise CheckpointError(f"{folder / manifest['checkpoint']['state']}: cannot restore the training "
                                  f"state ({type(exc).__name__}: {exc})") from None
        self.epoch, self.best, self.bad_epochs = state["epoch"], state["best"], state["bad_epochs"]
        self.history, self.train_seconds = state["history"], state["train_seconds"]
        if folder.resolve() == self.out.resolve():
            self.committed = self.epoch
        else:  # continuing another folder's run here: its best model file comes along
            self.out.mkdir(parents=True, exist_ok=True)
            best = runfolder.model_name(self.best["epoch"])
            runfolder.atomic_write(self.out / best, (folder / manifest["checkpoint"]["best_model"]).read_bytes())
        log.info("resumed from %s at epoch %d", folder, self.epoch)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed; train.tensorboard ignored")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    # ---- steps -------------------------------------------------------------------------
    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Main loss as a token sum over this rank's rows divided by the global token count, times
        the world size: after DDP averages gradients, that is the gradient of the global mean."""
        tcfg = self.cfg.train
        tokens = (batch.targets > 0).sum().double()
        global_tokens = float(all_reduce_sum({"n": float(tokens)}, self.dist)["n"]) if self.dist.enabled \
            else tokens.clamp_min(1)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            encoded = self.forward(batch)
            hidden = encoded.hidden
            table = self.model.item_embedding.weight
            if tcfg.loss == "ce":  # the config allows ce | sampled only (checked when it is built)
                main = full_softmax_ce(hidden, batch.targets, table, reduction="sum")
            else:
                main = sampled_softmax_ce(hidden, batch.targets, table, tcfg.n_negatives, tcfg.negatives,
                                          reduction="sum")
            main = main / global_tokens * self.dist.world
            parts = {"loss": main, **encoded.losses}
        total = sum(parts.values())
        logged = {k: v.detach() / self.dist.world for k, v in parts.items()}  # summed over ranks later
        return total, logged

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch])
        sums: dict[str, torch.Tensor] = {}  # kept on the device: no host sync per step
        steps = 0
        batches = train_batches(self.data.split, self.users, self.cfg.data.max_len,
                                self.cfg.train.batch_size, rng, COMPILE_WIDTH if self.cfg.train.compile else 1)
        bar = tqdm(batches, total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}",
                   disable=not (self.cfg.train.progress and self.dist.main), leave=False)
        bad = torch.zeros(3, device=self.device)  # first step with a non-finite loss or gradient, its values
        count = torch.zeros((), device=self.device)  # the step number, on the device: no host sync per step
        for batch in bar:
            if self.dist.enabled:
                batch = batch.rows(slice(self.dist.rank, None, self.dist.world))
            batch = batch.to(self.device)
            loss, parts = self.loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = self._grad_norm()
            self.optimizer.step()
            self.scheduler.step()
            steps += 1
            count += 1
            failed = ~(torch.isfinite(loss.detach()) & torch.isfinite(norm)) & (bad[0] == 0)
            bad = torch.where(failed, torch.stack([count, loss.detach().float(), norm.float()]), bad)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value.float()
            if steps % 25 == 1:  # a host sync anyway: check for divergence here and at the end
                self._check_finite(bad)
                bar.set_postfix(loss=f"{float(parts['loss']):.4f}")
        self._check_finite(bad)
        sums = {k: float(v) for k, v in sums.items()}
        return {k: v / max(1, steps) for k, v in all_reduce_sum(sums, self.dist).items()}

    def _grad_norm(self) -> torch.Tensor:
        """Total gradient norm (clipping to train.grad_clip when > 0); NaN/inf flags divergence."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.train.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        if not params:
            return torch.zeros((), device=self.device)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))

    def _check_finite(self, bad: torch.Tensor) -> None:
        step, loss, norm = bad.tolist()
        if step == 0:
            return
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}"
        raise NonFiniteError(self._divergence(f"epoch {self.epoch + 1}, step {int(step)}: {what}"))

    def _divergence(self, where: str) -> str:
        hint = f"lower train.lr (now {self.cfg.train.lr:g})" + (" or set train.bf16=false" if self.autocast else "")
        kept = (f"the run folder keeps epoch {self.committed} (best epoch {self.best['epoch']})" if self.committed
                else "nothing was saved")
        return f"training diverged at {where}; {hint}; {kept}"

    def evaluate(self, which: str) -> dict[str, float]:
        """Each rank scores every W-th user; metric sums are added up exactly across ranks."""
        users = None
        if self.dist.enabled:
            order = np.argsort(self.data.store.lengths, kind="stable")
            users = order[self.dist.rank:: self.dist.world]
        sums = evaluate_sums(self.model, self.data.split, which, self.cfg.eval, self.cfg.data.max_len,
                             self.device, users=users, autocast=self.autocast)
        return metrics_from_sums(all_reduce_sum(sums, self.dist))

    # ---- loop --------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to the end (or early stop), then score the best epoch on test; holds the folder's lock."""
        if self.dist.main:
            lock.acquire(self.out)
        try:
            with without_cudnn_attention(self.device):
                return self._fit()
        finally:
            if self.dist.main:
                lock.release(self.out)
            if self.writer is not None:
                self.writer.close()

    def _fit(self) -> TrainResult:
        tcfg, metric = self.cfg.train, self.cfg.eval.valid_metric
        self.out.mkdir(parents=True, exist_ok=True)
        stopped = self.bad_epochs >= tcfg.patience > 0
        while self.epoch < tcfg.epochs and not stopped:
            started = time.perf_counter()
            train_stats = self.train_epoch()
            self.train_seconds += time.perf_counter() - started
            try:
                valid = self.evaluate("valid")
            except NonFiniteError as exc:
                raise NonFiniteError(self._divergence(f"epoch {self.epoch + 1}, validation: {exc}")) from None
            self.epoch += 1
            improved = valid[metric] > self.best["metric"]
            if improved:
                self.best = {"epoch": self.epoch, "metric": valid[metric], "valid": valid}
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
            record = {"epoch": self.epoch, **train_stats, **{f"valid_{k}": v for k, v in valid.items()},
                      "seconds": round(time.perf_counter() - started, 2)}
            record.update(self.model.epoch_stats())
            self.history.append(checkpoint.plain(record))
            if self.dist.main:
                self._log_epoch(record, improved)
                runfolder.commit(self.out, self.epoch, self.best["epoch"], self._metrics(None),
                                 self._model_payload(), self._state_payload())
                self.committed = self.epoch
            barrier(self.dist)
            stopped = self.bad_epochs >= tcfg.patience > 0
            if stopped and self.dist.main:
                log.info("early stop: no %s improvement for %d epochs", metric, self.bad_epochs)
        if self.epoch == 0:
            raise ConfigError("no epoch was trained (train.epochs must be ≥ 1)")
        best = runfolder.load_model(self.out)
        checkpoint.load_weights(self.model, best["model"], str(self.out))
        test = self.evaluate("test")
        if self.dist.main:
            runfolder.commit(self.out, self.epoch, self.best["epoch"], self._metrics(test))
        return TrainResult(best_epoch=self.best["epoch"], valid=self.best["valid"], test=test,
                           history=self.history, train_seconds=self.train_seconds, output_dir=self.out)

    def _log_epoch(self, record: dict[str, Any], improved: bool) -> None:
        metric = self.cfg.eval.valid_metric
        log.info("epoch %3d  loss %.4f  valid %s %.4f  hr@10 %.4f  %.1fs%s", record["epoch"], record["loss"],
                 metric, record[f"valid_{metric}"], record.get("valid_hr@10", math.nan), record["seconds"],
                 "  *" if improved else "")
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])

    def _metrics(self, test: dict[str, float] | None) -> dict[str, Any]:
        """metrics.json without its `checkpoint` section (runfolder.commit adds it)."""
        result = {"dataset": self.data.name, "model": self.cfg.model["name"], "seed": self.cfg.train.seed,
                  "best_epoch": self.best["epoch"], "valid": self.best["valid"], "test": test,
                  "epochs": self.epoch, "train_seconds": round(self.train_seconds, 2),
                  "filter_seen": self.cfg.eval.filter_seen, "history": self.history}
        if self.oracle is not None:
            result["oracle"] = self.oracle
        if self.baselines is not None:
            result["baselines"] = self.baselines
        result["config"] = self.cfg.to_dict()
        result["fingerprint"] = self.fingerprint
        return checkpoint.plain(result)


MIN_STEPS = 20  # fewer optimiser steps per epoch than this: a model barely moves from its initialisation


def few_steps(users: int, batch_size: int) -> str | None:
    """A one-line warning when an epoch has fewer than MIN_STEPS optimiser steps, with a batch size that fixes it."""
    steps = max(1, math.ceil(users / batch_size))
    if steps >= MIN_STEPS:
        return None
    better = 2 ** max(0, int(math.log2(max(1, users // MIN_STEPS))))
    advice = (f"try --set train.batch_size={better} (≥ {MIN_STEPS} steps per epoch)" if better < batch_size
              else "more epochs may help; there are too few users for a smaller batch to fix it")
    return (f"an epoch is only {steps} optimiser step(s) ({users} training users / train.batch_size "
            f"{batch_size}): the model will barely learn; {advice}")


def oracle_metrics(data: Dataset, cfg: Config) -> dict[str, dict[str, float]]:
    """Metrics of the generator's true next-item distribution (synthetic data only).

    Many true probabilities tie exactly (a user's favourite routines start with equal probability),
    and ties count against the target; a tiny seeded jitter breaks them at random instead, so the
    oracle is scored like a model that must order tied items somehow.
    """
    from ..data.batching import eval_batches
    from ..eval.metrics import add_sums, finalize, metric_sums, target_ranks

    out = {}
    jitter = torch.Generator().manual_seed(0)
    for which in ("valid", "test"):
        sums: dict[str, float] = {}
        for batch in eval_batches(data.split, which, cfg.data.max_len, cfg.eval.batch_size):
            probs = torch.from_numpy(data.oracle[which][batch.users.numpy()]).double()
            scores = probs + 1e-12 * torch.rand(probs.shape, generator=jitter, dtype=torch.float64)
            seen = batch.seen if cfg.eval.filter_seen else None
            sums = add_sums(sums, metric_sums(target_ranks(scores, batch.targets, seen), cfg.eval.topk))
        out[which] = finalize(sums)
    return out
