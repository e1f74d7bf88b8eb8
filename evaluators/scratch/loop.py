"""The from-scratch training run: :func:`train_from_scratch` and the session it drives, built
from the shared training pieces (evaluators/training.py).

A session trains the epochs after the last checkpoint (none on a fresh start), evaluates on
the held-out split after each, and writes the checkpoint; resuming restores every state the
checkpoint holds, so the run continues exactly (bit for bit on CPU with the same thread count).

Given a :class:`~evaluators.scratch.group.WorkerGroup`, the session is one worker of a
data-parallel run: the model is wrapped in DistributedDataParallel (with SyncBatchNorm if the
config asks), each worker trains on and evaluates its share of the images, losses and counts
are summed over the workers, each epoch's random state comes from (seed, epoch, worker), and
worker 0 writes the checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.data import FolderFiles, ImageData
from evaluators.device import resolve_device
from evaluators.scratch.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    check_resume,
    data_info,
    save_checkpoint,
)
from evaluators.scratch.config import TrainConfig
from evaluators.scratch.group import WorkerGroup, epoch_seed
from evaluators.scratch.sources import training_sources
from evaluators.scratch.sync_bn import convert_batchnorms
from evaluators.training import (
    ConfigError,
    EpochStats,
    TrainStep,
    WeightEMA,
    amp_dtype,
    autocast,
    build_model,
    grad_scaler,
    isolated,
    recalibrate_bn,
    seed_generator,
    sgd,
    top1_counts,
    train_epoch,
    warmup_cosine,
)
from space import UserError, architecture_from_dict
from space.checks import one_line

__all__ = ["EpochRecord", "TrainProgress", "TrainResult", "TrainingSession", "train_from_scratch"]

_CUDA_CHECK_EVERY = 16  # steps between NaN checks on CUDA (one host-device sync each)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    top1: float  # percent, on the held-out split
    loss: float  # mean training loss of the epoch (cross-entropy with label smoothing, nats)
    lr: float  # learning rate of the epoch's last step
    seconds: float  # cumulative training wall time, all sessions (evaluation excluded)


@dataclass(frozen=True)
class TrainProgress:
    """What the ``progress`` callback receives: every step on CPU (every 16 on CUDA) with
    ``kind="step"``, and after each epoch's evaluation and checkpoint with ``kind="epoch"``."""

    kind: str  # "step" | "epoch"
    epoch: int  # 1-based, the epoch running (step) or just finished (epoch)
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    loss: float  # mean training loss of the epoch so far
    lr: float  # current learning rate
    images_per_second: float  # training throughput of this session so far
    eta_seconds: float  # training time left at that throughput (evaluation not included)
    top1: float | None = None  # held-out top-1 (percent), with kind="epoch"


@dataclass(frozen=True)
class TrainResult:
    status: str  # "finished" | "failed"
    top1: float | None  # percent on ``split`` after the last epoch; None if failed
    split: str  # "test" (official test split) or "val" (validation split; no test split)
    split_images: int  # images in that split
    epochs: int  # epochs completed, including those before a resume
    loss: float | None  # mean training loss of the last epoch
    train_seconds: float  # training wall time, all sessions, evaluation excluded
    images_per_second: float  # training images / train_seconds
    wall_seconds: float  # this call: setup, training, evaluation, checkpoints
    resumed_from: int  # the checkpoint's epoch when resumed, else 0
    error: str  # why it failed, one line; "" otherwise
    history: tuple[EpochRecord, ...]
    config: TrainConfig  # resolved: what was trained with
    arch: Any  # the architecture as trained (num_classes of the data)
    checkpoint: Path  # the last checkpoint written (or resumed from)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # eval mode

    def to_dict(self) -> dict[str, Any]:
        """Plain data (no model), for JSON."""
        return {
            "status": self.status, "top1": self.top1, "split": self.split,
            "split_images": self.split_images, "epochs": self.epochs, "loss": self.loss,
            "train_seconds": self.train_seconds, "images_per_second": self.images_per_second,
            "wall_seconds": self.wall_seconds, "resumed_from": self.resumed_from,
            "error": self.error, "history": [dataclasses.asdict(r) for r in self.history],
            "config": self.config.to_dict(), "arch": self.arch.to_dict(),
            "checkpoint": str(self.checkpoint),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], model: nn.Module | None = None) -> TrainResult:
        """The result :meth:`to_dict` described (a data-parallel run's, sent from worker 0),
        with ``model`` (e.g. read back from the checkpoint)."""
        fields = {**data, "history": tuple(EpochRecord(**r) for r in data["history"]),
                  "config": TrainConfig.from_dict(data["config"]),
                  "arch": architecture_from_dict(data["arch"]),
                  "checkpoint": Path(data["checkpoint"]), "model": model}
        return cls(**fields)


def train_from_scratch(arch: Any, data: ImageData | FolderFiles, config: TrainConfig, *,
                       out_dir: str | os.PathLike, resume: bool = False,
                       progress: Callable[[TrainProgress], None] | None = None,
                       group: WorkerGroup | None = None) -> TrainResult:
    """Train a fresh ``arch`` (``num_classes`` set to the data's) on the training split of
    ``data`` (in memory, or files read while training), writing ``out_dir/checkpoint.pt`` after
    every epoch; score it on the held-out split.

    ``resume=True`` continues from that checkpoint exactly; its architecture, data and settings
    must match (``epochs``, ``device``, ``threads``, ``eval_batch_size``, ``workers`` and
    ``sync_bn`` may change: a larger ``epochs`` extends the run, stretching the cosine to the
    new end). A non-finite loss or output returns status "failed" (the last good checkpoint
    stays); exceptions, including ``KeyboardInterrupt`` from ``progress``, propagate with the
    last checkpoint intact. ``group``: this process's place in a data-parallel run (its
    ``config.workers`` must be the group's size); None: one process.
    """
    wall = time.perf_counter()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"out_dir: {str(out_dir)!r} is not an existing folder")
    if (group.world if group is not None else 1) != config.workers:
        raise ConfigError(f"workers: got {config.workers}, but this runs on "
                          f"{group.world if group is not None else 1} process(es)")
    arch = dataclasses.replace(arch, num_classes=data.num_classes)
    config = config.resolve(data)
    state = check_resume(out_dir, arch, data, config) if resume else None
    device = resolve_device(config.device)
    amp = amp_dtype(config.amp, device)
    with isolated(device, threads=config.threads):  # the caller's RNG and threads are kept
        session = TrainingSession(arch, data, config, device=device, amp=amp,
                                  path=out_dir / CHECKPOINT_NAME, progress=progress,
                                  group=group)
        if state is not None:
            session.restore(state)
        status, error = session.train()
    return session.result(status, error, wall_seconds=time.perf_counter() - wall)


class TrainingSession:
    """One training session: model, optimizer, schedule, data sources, RNG and history, from a
    fresh start or restored from a checkpoint."""

    def __init__(self, arch: Any, data: ImageData | FolderFiles, config: TrainConfig, *,
                 device: torch.device, amp: torch.dtype | None, path: Path,
                 progress: Callable[[TrainProgress], None] | None,
                 group: WorkerGroup | None = None) -> None:
        self.arch, self.config, self.device, self.amp = arch, config, device, amp
        self.path, self.progress, self.group = path, progress, group
        self.data_info = data_info(data)
        self.gen = seed_generator(config.seed, device)  # batch order and augmentation
        self.model = build_model(arch, stem_stride=config.stem_stride, device=device,
                                 channels_last=config.channels_last,
                                 bn_momentum=config.bn_momentum)
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay else None
        self.net = self._parallel(self.model)  # what trains: the model, or its DDP wrapper
        self.opt = sgd(self.model, device, lr=config.lr, momentum=config.momentum,
                       nesterov=config.nesterov, weight_decay=config.weight_decay)
        self.scaler = grad_scaler(device, amp)
        self.split = data.held_out()[0]
        self.batches, self.held_out = training_sources(
            data, config, device=device, generator=self.gen,
            shard=group.shard if group else (0, 1), trainers=group.local if group else 1)
        total = self.batches.steps * config.epochs
        warmup = min(config.warmup_epochs * self.batches.steps, total // 10)
        self.sched = warmup_cosine(self.opt, warmup=warmup, total=total)
        self.step = TrainStep(self.net, self.opt, self.sched, amp=amp,
                              label_smoothing=config.label_smoothing, scaler=self.scaler,
                              ema=self.ema, reduce_loss=group.mean if group else None)
        self.history: list[EpochRecord] = []
        self.seconds = 0.0  # training wall time, all sessions
        self.images = 0  # training images processed, all sessions
        self.resumed_from = 0
        self.session_seconds, self.session_steps = 0.0, 0  # this session's, for the throughput

    def _parallel(self, model: nn.Module) -> nn.Module:
        """``model`` wrapped for data-parallel training (BatchNorm over the global batch if
        asked), or itself."""
        if self.group is None or self.group.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if self.config.sync_bn:  # PyTorch's runs on CUDA only; ours on any backend
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model) \
                if self.device.type == "cuda" else convert_batchnorms(model)
            self.model = model
        index = self.device.index if self.device.index is not None else (
            torch.cuda.current_device() if self.device.type == "cuda" else None)
        return DistributedDataParallel(model, device_ids=None if index is None else [index])

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (one that :func:`check_resume` accepted)."""
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            # The optimizer holds the rate the checkpoint's schedule set for the next step; asked
            # for more epochs, this schedule is longer, so that step's rate comes from this one.
            for group, base, factor in zip(self.opt.param_groups, self.sched.base_lrs,
                                           self.sched.lr_lambdas, strict=True):
                group["lr"] = base * factor(self.sched.last_epoch)
            self.sched._last_lr = [group["lr"] for group in self.opt.param_groups]
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.history = [EpochRecord(**r) for r in state["history"]]
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot resume from {str(self.path)!r}: its state does not "
                                  f"fit ({type(exc).__name__}: {one_line(exc, 160)})") from None
        self.seconds = float(state["train_seconds"])
        self.images = int(state["images"])
        self.resumed_from = int(state["epoch"])


    def save(self, epoch: int) -> None:
        if self.group is not None and not self.group.main:
            return
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        save_checkpoint(self.path, {
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            # not read on resume (every epoch is seeded from (seed, epoch)); kept for the format
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda,
                    "generator": self.gen.get_state(), "device_type": self.device.type},
            "arch": self.arch.to_dict(), "config": self.config.to_dict(),
            "data": self.data_info, "history": [dataclasses.asdict(r) for r in self.history],
            "train_seconds": self.seconds, "images": self.images,
            "workers": self.group.world if self.group is not None else 1,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        })

    def train(self) -> tuple[str, str]:
        """The epochs after the restored one; returns (status, error)."""
        cfg = self.config
        check_every = 1 if self.device.type == "cpu" else _CUDA_CHECK_EVERY  # a CPU sync is free
        for epoch in range(len(self.history) + 1, cfg.epochs + 1):
            # Every worker, and a single process, draws the epoch's batch order and
            # augmentation from (seed, epoch): one seed is one data stream whatever the number
            # of workers, and a resume needs no RNG state.
            self.gen.manual_seed(epoch_seed(cfg.seed, epoch))
            rank = self.group.rank if self.group is not None else 0
            torch.manual_seed(epoch_seed(cfg.seed, epoch, rank + 1))  # dropout
            stats = train_epoch(self.step, self.batches, check_every=check_every,
                                on_check=None if self.progress is None
                                else functools.partial(self._report_steps, epoch))
            self.session_seconds += stats.seconds
            self.session_steps += stats.steps
            self.seconds += stats.seconds
            self.images += stats.steps * self.batches.batch_size
            if stats.bad_step:
                return "failed", self._failure(stats.failure(epoch))
            top1 = self._score()
            if math.isnan(top1):
                return "failed", self._failure(
                    f"non-finite outputs (nan/inf) at evaluation after epoch {epoch}")
            self.history.append(EpochRecord(epoch=epoch, top1=top1, loss=stats.loss,
                                            lr=stats.lr, seconds=self.seconds))
            self.save(epoch)
            self._report_epoch(self.history[-1])
        return "finished", ""

    @property
    def evaluated(self) -> nn.Module:
        """The network scored and kept: the weight average if the recipe keeps one."""
        return self.ema.model if self.ema is not None else self.model

    def _score(self) -> float:
        """Top-1 (percent) on the held-out split, all workers' shares together, after the
        BatchNorm statistics are recomputed on training images (the same on every worker);
        NaN if an output is not finite. Leaves the trained model in training mode."""
        model, cfg = self.evaluated, self.config
        if cfg.bn_recalibrate:
            with autocast(self.device, self.amp):
                recalibrate_bn(model, self.batches.calibration(cfg.bn_recalibrate))
        correct, images, finite = top1_counts(model, self.held_out, amp=self.amp)
        counts = torch.stack([correct, torch.tensor(images, device=correct.device),
                              finite.long()])
        if self.group is not None:
            self.group.sum(counts)
        self.model.train()
        correct, images, finite = (int(v) for v in counts.tolist())
        workers = self.group.world if self.group is not None else 1
        return 100.0 * correct / images if finite == workers else math.nan

    def _report_steps(self, epoch: int, stats: EpochStats) -> None:
        steps = self.batches.steps
        rate = (self.session_seconds + stats.seconds) / (self.session_steps + stats.steps)
        left = (self.config.epochs - epoch + 1) * steps - stats.steps  # steps, this one's too
        self.progress(TrainProgress(
            kind="step", epoch=epoch, epochs=self.config.epochs, step=stats.steps, steps=steps,
            loss=stats.loss, lr=stats.lr, images_per_second=self._throughput(rate),
            eta_seconds=left * rate))

    def _report_epoch(self, record: EpochRecord) -> None:
        if self.progress is None:
            return
        steps = self.batches.steps
        rate = self.session_seconds / self.session_steps  # seconds per step
        self.progress(TrainProgress(
            kind="epoch", epoch=record.epoch, epochs=self.config.epochs, step=steps, steps=steps,
            loss=record.loss, lr=record.lr, images_per_second=self._throughput(rate),
            eta_seconds=(self.config.epochs - record.epoch) * steps * rate, top1=record.top1))

    def _throughput(self, seconds_per_step: float) -> float:
        return self.batches.batch_size / seconds_per_step if seconds_per_step > 0 else 0.0

    def _failure(self, what: str) -> str:
        kept = (f"the checkpoint of epoch {len(self.history)} is kept" if self.history
                else "no checkpoint was written")
        return f"{what}; {kept}; a lower learning rate may help"

    def result(self, status: str, error: str, *, wall_seconds: float) -> TrainResult:
        """The outcome of :meth:`train`; the model in eval mode unless it failed."""
        history = tuple(self.history)
        last = history[-1] if history else None
        failed = status == "failed"
        model = self.evaluated
        if not failed:
            model.eval()
        return TrainResult(
            status=status, top1=None if failed or last is None else last.top1, split=self.split,
            split_images=self.held_out.images, epochs=len(history),
            loss=None if last is None else last.loss, train_seconds=self.seconds,
            images_per_second=self.images / self.seconds if self.seconds > 0 else 0.0,
            wall_seconds=wall_seconds, resumed_from=self.resumed_from, error=error,
            history=history, config=self.config, arch=self.arch, checkpoint=self.path,
            model=None if failed else model)
