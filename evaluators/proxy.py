"""Proxy training: the accuracy evaluator of the search.

A candidate is trained from scratch for a few epochs at a small proxy resolution and scored by
top-1 on the held-out validation split (never trained on). The recipe is the same for candidates
and reference models, so their proxy accuracies are comparable:

- small-input adaptation: the network is built with ``stem_stride=1`` where the deployment stem
  has 2, so a 32x32 image ends at 2x2 feature maps (4x4 before the last stage) rather than 1x1,
  the usual CIFAR adaptation of ImageNet networks. Candidates and reference models get the same
  one. FLOPs and latency are counted at 224x224 with the deployment stem (evaluators/flops.py);
  only the proxy adapts;
- SGD with Nesterov momentum, linear warm-up then cosine decay to zero over all steps, label
  smoothing, no weight decay on BatchNorm parameters and biases;
- augmentation on the device on whole batches: random crop with zero padding and (optionally)
  horizontal flip; normalisation with fixed ImageNet statistics (evaluators/transforms.py);
- every BatchNorm gets the same momentum, and before each evaluation the statistics are
  recomputed on a few thousand training images with the current weights, so the per-epoch
  reports that early stopping acts on measure the weights, not lagging averages.

Speed: all images move to the device once as uint8 and are resized once to the proxy
resolution; an epoch is a seeded permutation, gathers, and on-device augmentation
(evaluators/batches.py), with no host-device synchronisation per step (evaluators/training.py).
``channels_last`` on model and inputs; autocast on CUDA only. Deterministic for a seed on CPU
(same thread count).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluators.batches import DeviceBatches, images_on_device
from evaluators.data import ImageData
from evaluators.device import resolve_device
from evaluators.training import (
    ConfigError,
    TrainStep,
    amp_dtype,
    build_model,
    check_settings,
    grad_scaler,
    isolated,
    score,
    seed_generator,
    sgd,
    train_epoch,
    warmup_cosine,
)
from space.io import atomic_write

__all__ = ["ProxyConfig", "ConfigError", "EpochReport", "ProxyResult", "PRESETS", "STATUSES",
           "RECIPE_VERSION", "hits_to_hex", "hits_from_hex", "proxy_config", "train_proxy"]

STATUSES = ("finished", "early_stopped", "failed")
# The proxy recipe's version: raised whenever a change to the trainer alters what the same
# settings, network, data and seed produce, so stored results (benchmarks, caches) of another
# version are not mixed with new ones.
RECIPE_VERSION = 1
_CHECK_EVERY = 16  # steps between NaN/inf checks (one host-device sync each)


@dataclass(frozen=True)
class ProxyConfig:
    """How one proxy training runs. Defaults suit 32x32 data (CIFAR, image folders); see
    :data:`PRESETS` for per-data-set settings (the embedded digits use a lighter one)."""

    epochs: int = 5  # a short proxy: enough to rank candidates, cheap enough for dozens of them
    batch_size: int = 128  # the usual CIFAR batch; fits any device at 32 px
    lr: float = 0.2  # peak learning rate at batch 128 (SGD + Nesterov); cosine-decayed to 0
    momentum: float = 0.9
    weight_decay: float = 5e-4  # the usual CIFAR value; not applied to BatchNorm or biases
    label_smoothing: float = 0.1  # steadier rankings from few epochs
    warmup_fraction: float = 0.1  # linear warm-up over this share of all steps (BN nets at lr 0.2)
    resolution: int = 32  # proxy input side; images are resized to it once, on the device
    stem_stride: int = 1  # small-input adaptation, identical for candidates and references
    augment: bool = True  # random crop (zero padding) on the device, per batch
    crop_padding: float = 0.125  # padding of the random crop as a share of the side (4 px at 32)
    flip: bool = True  # horizontal flip; off for digits, where a mirrored digit is another shape
    seed: int = 0  # weights, batch order and augmentation
    device: str = "auto"  # "auto": cuda if available, else cpu; or "cpu", "cuda", "cuda:1"
    threads: int | None = None  # torch.set_num_threads on CPU (the CPUs the trial was given)
    channels_last: bool = True  # NHWC: oneDNN's depthwise convs are faster in it (see
    # benchmarks/proxy_throughput.py); tensor cores want it too
    # "off" (fp32): at the proxy's 32 px a step is launch-bound, and autocast's extra casts make
    # it slower on a GPU (benchmarks/results/gpu_proxy_h200_partial.log).
    # "auto": bf16 (else fp16) on CUDA, fp32 on CPU, for larger inputs; or bf16/fp16.
    amp: str = "off"
    eval_batch_size: int = 512  # evaluation needs no gradients, so larger batches are cheap
    bn_momentum: float = 0.1  # set on every BatchNorm: torchvision's MobileNetV3 uses 0.01, whose
    # running statistics are still far off after a few hundred steps (top-1 at chance level)
    bn_recalibrate: int = 2048  # before each evaluation, recompute BatchNorm statistics on this
    # many training images (no augmentation, no gradients: cheap next to an epoch): running
    # averages lag the weights while the learning rate is high, which makes early-epoch reports
    # (what early stopping acts on) mostly noise; 0 = use the running averages

    def __post_init__(self) -> None:
        check_settings(self, optional=("threads",))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Per-data-set proxy settings (overrides of ProxyConfig's defaults). Digits are 8x8 and tiny:
# at 16x16 with stem stride 1 the maps shrink as 32x32 with the deployment stem (2x2 before the
# last stage); three epochs of 1,347 images in batches of 64 (lr scaled linearly from 0.2 at
# 128) keep a GhostNet's proxy to seconds on one CPU core; a flipped digit is a different digit.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"resolution": 16, "epochs": 3, "batch_size": 64, "lr": 0.1, "flip": False,
               "bn_recalibrate": 512},
    "cifar10": {},
    "cifar100": {},
    "folder": {},
}


def proxy_config(dataset: str, **overrides: Any) -> ProxyConfig:
    """ProxyConfig for ``dataset`` (a key of :data:`PRESETS`) with ``overrides`` applied."""
    if dataset not in PRESETS:
        raise ConfigError(f"dataset: got {dataset!r}, expected one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ProxyConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown proxy setting {unknown[0]!r}; allowed: {', '.join(sorted(fields))}")
    return ProxyConfig(**{**PRESETS[dataset], **overrides})


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    top1: float  # percent, on the validation split
    loss: float  # mean training loss of the epoch (cross-entropy with label smoothing, nats)
    seconds: float  # cumulative training wall time (evaluation not included)
    images: int  # cumulative training images processed (each epoch's ragged last batch dropped)
    # which held-out images it got right, in order: a bitmap as hex (hits_from_hex reads it);
    # two networks scored on the same images are compared image by image (a paired error)
    hits: str = ""


@dataclass(frozen=True)
class ProxyResult:
    status: str  # "finished" | "early_stopped" (report() asked to stop) | "failed"
    top1: float | None  # percent, after the last completed epoch; None if failed
    loss: float | None  # mean training loss of the last completed epoch; None if non-finite
    epochs: int  # epochs completed
    train_seconds: float  # training wall time, evaluation and setup excluded
    images_per_second: float  # training images processed / train_seconds
    error: str = ""  # why it failed, one line; "" otherwise
    curve: tuple[EpochReport, ...] = ()
    wall_seconds: float = 0.0  # the whole call: setup, training and evaluation

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["curve"] = [dataclasses.asdict(r) for r in self.curve]
        return data


@dataclass
class _Progress:
    """What survives an out-of-memory error: the finished epochs."""

    curve: list[EpochReport] = dataclasses.field(default_factory=list)
    images: int = 0
    train_seconds: float = 0.0
    earlier_wall: float = 0.0  # wall seconds of the calls before a resumed one


def hits_to_hex(hits: torch.Tensor) -> str:
    """Per-image correctness (bool, in the held-out split's order) as a hex bitmap."""
    return np.packbits(hits.to("cpu").numpy().astype(np.uint8)).tobytes().hex()


def hits_from_hex(text: str, n: int) -> np.ndarray:
    """The bool array of ``n`` images that :func:`hits_to_hex` wrote; ValueError if ``text``
    is not such a bitmap."""
    raw = bytes.fromhex(text)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"hits: {len(raw)} bytes for {n} images")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n].astype(bool)


def train_proxy(arch: Any, data: ImageData, config: ProxyConfig, *,
                report: Callable[[EpochReport], bool | None] | None = None,
                split: str = "val", resume: str | os.PathLike | None = None) -> ProxyResult:
    """Train ``arch`` (a GhostNet :class:`space.Architecture` or a MobileNetV3 reference) on
    ``data.train_x`` and score it on the held-out ``split`` ("val"; "test" for a final figure).

    ``report`` is called after every epoch; returning True stops the trial (status
    "early_stopped"). A NaN/inf loss or running out of memory returns status "failed" with the
    reason in ``error``; any other exception propagates.

    ``resume``: a file the state is written to after every epoch. A call given a file left by
    an interrupted call with the same network, data and settings continues after its last
    epoch, and on CPU with the same thread count ends exactly as an uninterrupted call would;
    the seconds reported include the earlier calls'. The caller removes the file when done.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split: got {split!r}, expected 'val' or 'test'")
    eval_x, eval_y = (data.val_x, data.val_y) if split == "val" else (data.test_x, data.test_y)
    if eval_x is None:
        raise ValueError(f"split: {data.name} has no official test set; use split='val'")
    device = resolve_device(config.device)
    amp = amp_dtype(config.amp, device)
    progress = _Progress()
    start = time.perf_counter()
    epochs_file = None if resume is None else _EpochsFile(
        Path(resume), _fingerprint(arch, data, config, split),
        lambda: progress.earlier_wall + time.perf_counter() - start)
    oom = ""
    try:
        with isolated(device, threads=config.threads):
            status, error = _train(arch, data, eval_x, eval_y, config, device, amp, report,
                                   progress, epochs_file)
    except torch.OutOfMemoryError as exc:
        oom = _first_line(exc)
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):  # the CPU allocator's out-of-memory
            raise
        oom = _first_line(exc)
    if oom:  # outside the except block, so the traceback's frames (and tensors) are gone
        status, error = "failed", f"out of memory: {oom}"
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    last = progress.curve[-1] if progress.curve else None
    failed = status == "failed"
    return ProxyResult(
        status=status,
        top1=None if failed or last is None else last.top1,
        loss=None if last is None or not math.isfinite(last.loss) else last.loss,
        epochs=len(progress.curve),
        train_seconds=progress.train_seconds,
        images_per_second=progress.images / progress.train_seconds
        if progress.train_seconds > 0 else 0.0,
        error=error, curve=tuple(progress.curve),
        wall_seconds=progress.earlier_wall + time.perf_counter() - start)


# Settings that may change between an interrupted call and its continuation: how fast it runs.
_RESUMABLE_CHANGES = ("threads", "eval_batch_size")


def _fingerprint(arch: Any, data: ImageData, config: ProxyConfig, split: str) -> str:
    """What a continued training must share with the interrupted one: recipe, settings,
    network, and the images it trains and is scored on."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps([RECIPE_VERSION, settings, arch.to_dict(), split,
                                      data.identity(splits=("train", split))],
                                     sort_keys=True).encode()).hexdigest()


@dataclass
class _EpochsFile:
    """The state of a proxy training after its last finished epoch, in one file: weights,
    optimizer, schedule, RNG states, the last epoch's order (BatchNorm recalibration draws from
    it) and the curve. Read back with ``torch.load(weights_only=True)``: tensors and plain data
    only."""

    path: Path
    fingerprint: str
    wall: Callable[[], float]  # wall seconds so far, earlier calls included

    def save(self, step: TrainStep, gen: torch.Generator, batches: DeviceBatches,
             progress: _Progress) -> None:
        cuda = step.device.type == "cuda"
        state = {
            "fingerprint": self.fingerprint, "model": step.model.state_dict(),
            "optimizer": step.opt.state_dict(), "schedule": step.schedule.state_dict(),
            "scaler": step.scaler.state_dict() if step.scaler is not None else None,
            "rng": torch.get_rng_state(), "generator": gen.get_state(),
            "cuda_rng": torch.cuda.get_rng_state(step.device) if cuda else None,
            "order": batches.order.to("cpu"),
            "curve": [dataclasses.asdict(r) for r in progress.curve],
            "images": progress.images, "train_seconds": progress.train_seconds,
            "wall_seconds": self.wall(),
        }
        atomic_write(self.path, lambda fh: torch.save(state, fh))

    def restore(self, step: TrainStep, gen: torch.Generator, batches: DeviceBatches,
                progress: _Progress) -> None:
        """Continue from the file, if there is one; refuse another training's."""
        if not self.path.exists():
            return
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"resume file {str(self.path)!r} holds another training (network, "
                             "data or settings differ); remove it to start this one afresh")
        step.model.load_state_dict(state["model"])
        step.opt.load_state_dict(state["optimizer"])
        step.schedule.load_state_dict(state["schedule"])
        if step.scaler is not None and state["scaler"] is not None:
            step.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        gen.set_state(state["generator"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], step.device)
        batches.order = state["order"].to(batches.order.device)
        progress.curve = [EpochReport(**r) for r in state["curve"]]
        progress.images, progress.train_seconds = state["images"], state["train_seconds"]
        progress.earlier_wall = state["wall_seconds"]
        step.lr = step.opt.param_groups[0]["lr"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _train(arch: Any, data: ImageData, eval_x: torch.Tensor, eval_y: torch.Tensor,
           config: ProxyConfig, device: torch.device, amp: torch.dtype | None,
           report: Callable[[EpochReport], bool | None] | None,
           progress: _Progress, epochs_file: _EpochsFile | None) -> tuple[str, str]:
    """The epochs; fills ``progress`` and returns (status, error)."""
    gen = seed_generator(config.seed, device)  # inside isolated(): the caller's RNG is kept
    model = build_model(dataclasses.replace(arch, num_classes=data.num_classes),
                        stem_stride=config.stem_stride, device=device,
                        channels_last=config.channels_last, bn_momentum=config.bn_momentum)
    opt = sgd(model, device, lr=config.lr, momentum=config.momentum,
              nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    # Once per trial: all images to the device as uint8, at the proxy resolution.
    x, y = images_on_device(data.train_x, data.train_y, device=device,
                            resolution=config.resolution)  # (N, 3, R, R) uint8, (N,)
    ex, ey = images_on_device(eval_x, eval_y, device=device, resolution=config.resolution)
    if len(x) < 2:
        raise ValueError(f"{data.name}: need at least 2 training images, got {len(x)}")
    batches = DeviceBatches(x, y, batch_size=min(config.batch_size, len(x)), generator=gen,
                            channels_last=config.channels_last, augment=config.augment,
                            crop_padding=config.crop_padding, flip=config.flip)
    total = batches.steps * config.epochs
    schedule = warmup_cosine(opt, warmup=int(config.warmup_fraction * total), total=total)
    step = TrainStep(model, opt, schedule, amp=amp, label_smoothing=config.label_smoothing,
                     scaler=grad_scaler(device, amp))
    if epochs_file is not None:
        epochs_file.restore(step, gen, batches, progress)
    for epoch in range(len(progress.curve) + 1, config.epochs + 1):
        stats = train_epoch(step, batches, check_every=_CHECK_EVERY)
        progress.train_seconds += stats.seconds
        progress.images += stats.steps * batches.batch_size
        if stats.bad_step:
            return "failed", stats.failure(epoch)
        hits: list[torch.Tensor] = []
        top1 = score(model, batches, ex, ey, recalibrate=config.bn_recalibrate,
                     resolution=config.resolution, batch_size=config.eval_batch_size,
                     channels_last=config.channels_last, amp=amp, hits=hits)
        if math.isnan(top1):
            return "failed", f"non-finite outputs (nan/inf) at evaluation after epoch {epoch}"
        epoch_report = EpochReport(epoch=epoch, top1=top1, loss=stats.loss,
                                   seconds=progress.train_seconds, images=progress.images,
                                   hits=hits_to_hex(torch.cat(hits)))
        progress.curve.append(epoch_report)
        if epochs_file is not None:
            epochs_file.save(step, gen, batches, progress)
        if report is not None and report(epoch_report):
            return "early_stopped", ""
    return "finished", ""
