"""Training a found architecture from scratch: the full recipe, checkpoints, resume and ONNX.

The proxy (evaluators/proxy.py) ranks candidates with a few epochs; this trains the chosen one
properly and reports its top-1 on the held-out split: the official test split when the data set
has one (CIFAR, folders with ``test/``), else the validation split carved from the training
files. Training selects nothing on that split (no best-epoch pick, no early stopping); the test
split's figure is therefore an unbiased estimate. The validation split is the one the proxy
scores on (same data, same seed), so for an architecture a search picked there, its figure is
optimistic.

The recipe, defaults of :class:`TrainConfig` (the reasons are beside each field):

- SGD with Nesterov momentum 0.9; peak learning rate 0.1 per 128 images, scaled linearly with
  the batch (Goyal et al., 2017, "Accurate, Large Minibatch SGD"); linear warm-up over 5 epochs
  (at most a tenth of the run) then cosine decay to zero, stepped per iteration;
- cross-entropy with label smoothing 0.1 (Szegedy et al., 2016);
- weight decay 5e-4 (the usual value for CIFAR-size data; the GhostNet paper used 4e-5 on
  ImageNet), never on BatchNorm parameters or biases;
- dropout before the classifier as the architecture says (``Architecture.dropout``);
- random crop (zero padding of 1/8 of the side) and horizontal flip on the device, per batch;
  no flip for digits, where a mirrored digit is another shape;
- the data set's native resolution; below 64 px the stem keeps stride 1 (the usual CIFAR
  adaptation of ImageNet networks, the same one the proxy uses), from 64 px on it has the
  deployment stride 2;
- every BatchNorm with momentum 0.1, and its statistics recomputed exactly on 2,048 training
  images before each evaluation ("precise BN"), so per-epoch figures measure the weights;
- channels_last; bf16 (else fp16) autocast on CUDA only.

Checkpoints: after every epoch ``checkpoint.pt`` in the output folder is replaced atomically. It
holds the model, optimizer, scheduler (and fp16 scaler) states, the RNG states, the epoch, the
history, the architecture and the configuration, all as tensors and plain data, and is read back
with ``torch.load(weights_only=True)`` only, so a crafted file cannot run code. Resuming from it
continues the run exactly (bit for bit on CPU with the same thread count).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import pickle
import re
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluators.data import ImageData
from evaluators.device import resolve_device
from evaluators.proxy import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ConfigError,
    Normalizer,
    ProxyConfig,
    amp_dtype,
    augment_batch,
    autocast,
    batchnorms,
    evaluate,
    num_threads,
    recalibrate_bn,
    resize_images,
    sgd,
)
from space import ArchitectureError, UserError, architecture_from_dict

__all__ = ["TrainConfig", "TRAIN_PRESETS", "train_config", "EpochRecord", "TrainProgress",
           "TrainResult", "CheckpointError", "OnnxError", "OnnxExport", "train_from_scratch",
           "load_checkpoint", "check_resume", "model_from_checkpoint", "export_onnx", "onnx_available",
           "CHECKPOINT_NAME", "BASE_LR", "BASE_BATCH", "SMALL_INPUT", "ONNX_OPSET",
           "IMAGENET_MEAN", "IMAGENET_STD"]

BASE_LR = 0.1  # peak learning rate at BASE_BATCH images per step (SGD + Nesterov)
BASE_BATCH = 128
SMALL_INPUT = 64  # inputs below this side keep the stem at stride 1
ONNX_OPSET = 17  # LayerNorm-era opset: every op of GhostNet/MobileNetV3, broad runtime support
CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_FORMAT = "ghostnas-train-checkpoint"
_CHECKPOINT_VERSION = 1
_CHECKPOINT_KEYS = ("format", "version", "epoch", "model", "optimizer", "scheduler", "scaler",
                    "rng", "arch", "config", "data", "history", "train_seconds", "images")
# Settings that may differ when resuming: how long, and where/how fast it runs.
_RESUMABLE_CHANGES = ("epochs", "device", "threads", "eval_batch_size")
_CUDA_CHECK_EVERY = 16  # steps between NaN checks on CUDA (one host-device sync each)
_ONNX_RTOL = 1e-3  # ONNX Runtime vs PyTorch: fp32 kernels differ only in summation order
_ONNX_ATOL = 1e-4


class CheckpointError(UserError):
    """A checkpoint that cannot be read, is not ours, or does not match what is resumed."""


class OnnxError(UserError):
    """The ONNX file could not be checked, or its outputs differ from PyTorch's."""


@dataclass(frozen=True)
class TrainConfig:
    """How a from-scratch training runs. ``None`` fields are resolved from the data by
    :meth:`resolve` (the resolved values are what checkpoints and results record)."""

    epochs: int = 200  # mobile networks on CIFAR-size data converge in 200-300 cosine epochs
    batch_size: int = 128  # the usual CIFAR batch; fits any device at 32 px
    lr: float | None = None  # peak learning rate; None: BASE_LR * batch_size / BASE_BATCH
    momentum: float = 0.9
    nesterov: bool = True  # a free, slightly steadier variant of momentum
    weight_decay: float = 5e-4  # CIFAR-size value (ImageNet-size: ~4e-5); not on BN or biases
    label_smoothing: float = 0.1  # regularises the classifier of small networks
    warmup_epochs: int = 5  # linear warm-up, capped at a tenth of all steps for short runs:
    # BatchNorm networks at lr 0.1 diverge less often when the rate starts small
    resolution: int | None = None  # input side; None: the data set's native side
    stem_stride: int | None = None  # None: 1 below SMALL_INPUT px, else 2 (deployment stem)
    augment: bool = True  # random crop with zero padding, on the device, per batch
    crop_padding: float = 0.125  # crop padding as a share of the side (4 px at 32)
    flip: bool = True  # random horizontal flip; off for digits
    seed: int = 0  # weights, batch order, augmentation and dropout
    device: str = "auto"  # "auto": cuda if available, else cpu; or "cpu", "cuda", "cuda:1"
    threads: int | None = None  # torch.set_num_threads on CPU during training; None: leave it
    channels_last: bool = True  # NHWC: faster depthwise convolutions on oneDNN and tensor cores
    amp: str = "auto"  # "auto": bf16 (else fp16) autocast on CUDA, fp32 on CPU; or off/bf16/fp16
    eval_batch_size: int = 512  # evaluation needs no gradients, so larger batches are cheap
    bn_momentum: float = 0.1  # on every BatchNorm (torchvision's MobileNetV3 has 0.01)
    bn_recalibrate: int = 2048  # before each evaluation, exact BatchNorm statistics over this
    # many training images (no augmentation); 0 = keep the running averages

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 2), ("warmup_epochs", 0),
                              ("seed", 0), ("eval_batch_size", 1), ("bn_recalibrate", 0)):
            _check_int(name, getattr(self, name), minimum)
        for name, minimum in (("resolution", 8), ("threads", 1)):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum, none_ok=True)
        if self.stem_stride is not None and (isinstance(self.stem_stride, bool)
                                             or self.stem_stride not in (1, 2)):
            raise ConfigError(f"stem_stride: got {self.stem_stride!r}, expected 1, 2 or None")
        for name, low, high, strict in (("lr", 0.0, None, True), ("momentum", 0.0, 1.0, False),
                                        ("weight_decay", 0.0, None, False),
                                        ("label_smoothing", 0.0, 1.0, False),
                                        ("crop_padding", 0.0, 0.5, False),
                                        ("bn_momentum", 0.0, 1.0, True)):
            value = getattr(self, name)
            if name == "lr" and value is None:
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value) and (value > low if strict else value >= low) \
                and (high is None or value < high)
            if not ok:
                rule = f"{'>' if strict else '>='} {low:g}" + ("" if high is None
                                                               else f" and < {high:g}")
                raise ConfigError(f"{name}: got {value!r}, expected a number {rule}"
                                  + (" or None" if name == "lr" else ""))
        for name in ("nesterov", "augment", "flip", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: got {getattr(self, name)!r}, expected true or false")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov: needs momentum > 0; set nesterov=False for plain SGD")
        # amp and device: the proxy's rules (one place), through the same validation
        ProxyConfig(amp=self.amp, device=self.device)

    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up: ``lr``, or the linear scaling rule."""
        return self.lr if self.lr is not None else BASE_LR * self.batch_size / BASE_BATCH

    def resolve(self, data: ImageData) -> TrainConfig:
        """Fill the ``None`` fields for ``data``: resolution (native side), stem stride (small-input
        rule), batch (at most the training images) and learning rate (scaling rule)."""
        resolution = self.resolution if self.resolution is not None else max(data.image_size)
        if resolution < 8:
            raise ConfigError(f"resolution: {data.name} images are {resolution} px; set a "
                              "resolution >= 8")
        n = len(data.train_x)
        if n < 2:
            raise ConfigError(f"{data.name}: need at least 2 training images, got {n}")
        batch = min(self.batch_size, n)
        stem = self.stem_stride if self.stem_stride is not None else (
            1 if resolution < SMALL_INPUT else 2)
        lr = self.lr if self.lr is not None else BASE_LR * batch / BASE_BATCH
        return dataclasses.replace(self, resolution=resolution, stem_stride=stem,
                                   batch_size=batch, lr=lr)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown training setting {unknown[0]!r}; allowed: "
                              f"{', '.join(sorted(fields))}")
        return cls(**data)


def _check_int(name: str, value: Any, minimum: int, *, none_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if none_ok else ""
        raise ConfigError(f"{name}: got {value!r}, expected an integer >= {minimum}{extra}")


# Per-data-set overrides of TrainConfig's defaults: a flipped digit is a different digit, and
# 8x8 digits train at 16x16 as in the proxy (evaluators/proxy.py PRESETS), so a trained top-1
# compares with the search's.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"flip": False, "resolution": 16},
    "cifar10": {},
    "cifar100": {},
    "folder": {},
}


def train_config(dataset: str, **overrides: Any) -> TrainConfig:
    """TrainConfig for ``dataset`` (a key of :data:`TRAIN_PRESETS`) with ``overrides`` applied."""
    if dataset not in TRAIN_PRESETS:
        raise ConfigError(f"dataset: got {dataset!r}, expected one of {', '.join(TRAIN_PRESETS)}")
    return TrainConfig.from_dict({**TRAIN_PRESETS[dataset], **overrides})


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


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``: a kill
    mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train_from_scratch`, as tensors and plain data only.

    ``torch.load(weights_only=True)`` refuses any other object (a pickled function or class,
    which could run code) before creating it; that, a file that is not a checkpoint, and one
    from another program all raise :class:`CheckpointError` with one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it references {found.group(1)}" if found else _one_line(
            str(exc).split("WeightsUnpickler error:")[-1], 120)
        raise CheckpointError(
            f"refused to load checkpoint {str(path)!r}: {what}; a checkpoint of 'search train' "
            "holds only tensors and plain data (the file is corrupt, from another program, or "
            "malicious)") from None
    except Exception as exc:  # not a zip, truncated, ...: RuntimeError, EOFError, OSError
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: not a PyTorch checkpoint "
                              f"or truncated ({type(exc).__name__}: {_one_line(exc, 160)})"
                              ) from None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a 'search train' checkpoint "
                              "(a plain state_dict or another program's file)")
    if state.get("version") != _CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version "
                              f"{state.get('version')!r}; this GhostNAS reads version "
                              f"{_CHECKPOINT_VERSION}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}; it is "
                              "damaged")
    return state


def _checkpoint_parts(state: dict[str, Any], path: Path) -> tuple[Any, TrainConfig]:
    try:
        return architecture_from_dict(state["arch"]), TrainConfig.from_dict(state["config"])
    except (ArchitectureError, ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {_one_line(exc)}") from None


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a checkpoint (CPU, eval mode) and the checkpoint's contents."""
    path = Path(path)
    state = load_checkpoint(path)
    arch, config = _checkpoint_parts(state, path)
    model = arch.build(stem_stride=config.stem_stride or 2)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: weights do not fit its architecture "
                              f"({_one_line(exc, 160)})") from None
    return model.eval(), state


def _check_resumable(state: dict[str, Any], path: Path, arch: Any, config: TrainConfig,
                     data_info: dict[str, Any]) -> None:
    old_arch, old_config = _checkpoint_parts(state, path)
    if old_arch != arch:
        raise CheckpointError(f"cannot resume from {str(path)!r}: it was trained from a "
                              "different architecture; give the same one, or start over")
    old, new = old_config.to_dict(), config.to_dict()
    for name in old:
        if name not in _RESUMABLE_CHANGES and old[name] != new[name]:
            raise CheckpointError(f"cannot resume from {str(path)!r}: it was trained with "
                                  f"{name}={old[name]!r}, now {name}={new[name]!r}; keep the "
                                  "same setting, or start over")
    for name, value in data_info.items():
        if state["data"].get(name) != value:
            raise CheckpointError(f"cannot resume from {str(path)!r}: its data had "
                                  f"{name}={state['data'].get(name)!r}, now {value!r}; use the "
                                  "same data set, subset and seed, or start over")
    if state["epoch"] >= config.epochs:
        raise CheckpointError(f"nothing to resume: {str(path)!r} is already trained to epoch "
                              f"{state['epoch']} (asked for {config.epochs} epochs); ask for "
                              "more epochs to train further")


# ---------------------------------------------------------------------------------------------
# The trainer


def _lr_factor(step: int, *, warmup: int, total: int) -> float:
    """Multiplier of the peak rate before optimizer step ``step`` (0-based): linear warm-up
    over ``warmup`` steps, then half a cosine to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _proxy_view(config: TrainConfig) -> ProxyConfig:
    """The proxy's config with this run's shared settings, for the proxy's helpers
    (evaluation, BatchNorm recalibration, autocast dtype, threads)."""
    return ProxyConfig(batch_size=config.batch_size, resolution=config.resolution,
                       stem_stride=config.stem_stride, seed=config.seed, device=config.device,
                       threads=config.threads, channels_last=config.channels_last,
                       amp=config.amp, eval_batch_size=config.eval_batch_size)


def _held_out(data: ImageData) -> tuple[str, torch.Tensor, torch.Tensor]:
    if data.test_x is not None:
        return "test", data.test_x, data.test_y
    return "val", data.val_x, data.val_y


def _data_info(data: ImageData) -> dict[str, Any]:
    """What a resumed run's data must match."""
    split, eval_x, _ = _held_out(data)
    return {"dataset": data.name, "train_images": len(data.train_x), "held_out": split,
            "held_out_images": len(eval_x), "num_classes": data.num_classes,
            "image_size": list(data.image_size)}


def check_resume(out_dir: str | os.PathLike, arch: Any, data: ImageData,
                 config: TrainConfig) -> dict[str, Any]:
    """The checkpoint in ``out_dir`` if :func:`train_from_scratch` can resume it with these
    arguments; else :class:`CheckpointError` saying what differs. Lets a caller refuse before
    it changes anything."""
    arch = dataclasses.replace(arch, num_classes=data.num_classes)
    config = config.resolve(data)
    path = Path(out_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path)
    _check_resumable(state, path, arch, config, _data_info(data))
    return state


def train_from_scratch(arch: Any, data: ImageData, config: TrainConfig, *,
                       out_dir: str | os.PathLike, resume: bool = False,
                       progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Train a fresh ``arch`` (``num_classes`` set to the data's) on ``data.train_x``, writing
    ``out_dir/checkpoint.pt`` after every epoch; score it on the held-out split.

    ``resume=True`` continues from that checkpoint exactly; its architecture, data and settings
    must match (``epochs``, ``device``, ``threads`` and ``eval_batch_size`` may change: a larger
    ``epochs`` extends the run, stretching the cosine to the new end). A non-finite loss or
    output returns status "failed" (the last good checkpoint stays); exceptions, including
    ``KeyboardInterrupt`` from ``progress``, propagate with the last checkpoint intact.
    """
    wall = time.perf_counter()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"out_dir: {str(out_dir)!r} is not an existing folder")
    arch = dataclasses.replace(arch, num_classes=data.num_classes)
    config = config.resolve(data)
    split, eval_x, eval_y = _held_out(data)
    data_info = _data_info(data)
    path = out_dir / CHECKPOINT_NAME
    state = check_resume(out_dir, arch, data, config) if resume else None
    device = resolve_device(config.device)
    view = _proxy_view(config)
    amp = amp_dtype(view, device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with num_threads(view, device), torch.random.fork_rng(devices=cuda):  # caller's RNG kept
        run = _Run(arch, data, config, device=device, amp=amp, eval_x=eval_x, eval_y=eval_y,
                   data_info=data_info, path=path, progress=progress)
        if state is not None:
            run.restore(state)
        status, error = run.train()
    history = tuple(run.history)
    last = history[-1] if history else None
    failed = status == "failed"
    if not failed:
        run.model.eval()
    return TrainResult(
        status=status, top1=None if failed or last is None else last.top1, split=split,
        split_images=len(eval_x), epochs=len(history),
        loss=None if last is None else last.loss, train_seconds=run.seconds,
        images_per_second=run.images / run.seconds if run.seconds > 0 else 0.0,
        wall_seconds=time.perf_counter() - wall, resumed_from=run.resumed_from, error=error,
        history=history, config=config, arch=arch, checkpoint=path,
        model=None if failed else run.model)


class _Run:
    """One training session: model, optimizer, schedule, data on the device, RNG and history."""

    def __init__(self, arch: Any, data: ImageData, config: TrainConfig, *,
                 device: torch.device, amp: torch.dtype | None, eval_x: torch.Tensor,
                 eval_y: torch.Tensor, data_info: dict[str, Any], path: Path,
                 progress: Callable[[TrainProgress], None] | None) -> None:
        self.arch, self.config, self.device, self.amp = arch, config, device, amp
        self.data_info, self.path, self.progress = data_info, path, progress
        self.view = _proxy_view(config)
        torch.manual_seed(config.seed)  # weights and dropout (inside fork_rng)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(config.seed)  # batch order and augmentation
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: autotune once

        fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = arch.build(stem_stride=config.stem_stride).to(
            device=device, memory_format=fmt).train()
        for bn in batchnorms(self.model):
            bn.momentum = config.bn_momentum
        self.opt = sgd(self.model, device, lr=config.lr, momentum=config.momentum,
                       nesterov=config.nesterov, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
        self.norm = Normalizer(device)

        # Once per run: all images to the device as uint8 at the training resolution.
        self.x = resize_images(data.train_x.to(device), config.resolution)  # (N, 3, R, R)
        self.y = data.train_y.to(device)  # (N,)
        self.eval_x = resize_images(eval_x.to(device), config.resolution)
        self.eval_y = eval_y.to(device)
        self.steps = len(self.x) // config.batch_size  # ragged last batch dropped
        total = self.steps * config.epochs
        warmup = min(config.warmup_epochs * self.steps, total // 10)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: _lr_factor(s, warmup=warmup, total=total))
        self.history: list[EpochRecord] = []
        self.seconds = 0.0  # training wall time, all sessions
        self.images = 0  # training images processed, all sessions
        self.resumed_from = 0

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            # The optimizer holds the rate the old schedule set for the next step; with more
            # epochs than before the schedule is longer, so set that step's rate from this one.
            for group, base, factor in zip(self.opt.param_groups, self.sched.base_lrs,
                                           self.sched.lr_lambdas, strict=True):
                group["lr"] = base * factor(self.sched.last_epoch)
            self.sched._last_lr = [group["lr"] for group in self.opt.param_groups]
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            if rng.get("device_type") == self.device.type:
                if self.device.type == "cuda" and rng.get("cuda") is not None:
                    torch.cuda.set_rng_state(rng["cuda"], self.device)
                self.gen.set_state(rng["generator"])
            else:  # moved between CPU and CUDA: their generators' states do not convert, so
                # the batch order continues from a seed of its own (not bit-exact, still seeded)
                self.gen.manual_seed(self.config.seed + 1_000_003 * int(state["epoch"]))
            self.history = [EpochRecord(**r) for r in state["history"]]
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot resume from {str(self.path)!r}: its state does not "
                                  f"fit ({type(exc).__name__}: {_one_line(exc, 160)})") from None
        self.seconds = float(state["train_seconds"])
        self.images = int(state["images"])
        self.resumed_from = int(state["epoch"])

    def save(self, epoch: int) -> None:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        _atomic_save({
            "format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, "epoch": epoch,
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda,
                    "generator": self.gen.get_state(), "device_type": self.device.type},
            "arch": self.arch.to_dict(), "config": self.config.to_dict(),
            "data": self.data_info, "history": [dataclasses.asdict(r) for r in self.history],
            "train_seconds": self.seconds, "images": self.images,
        }, self.path)

    def train(self) -> tuple[str, str]:
        """Epochs after the restored one; returns (status, error)."""
        cfg, dev = self.config, self.device
        batch, steps = cfg.batch_size, self.steps
        padding = round(cfg.crop_padding * cfg.resolution) if cfg.augment else 0
        flip = cfg.flip and cfg.augment
        check_every = 1 if dev.type == "cpu" else _CUDA_CHECK_EVERY  # a CPU sync is free
        loss_sum = torch.zeros((), device=dev)
        bad_step = torch.full((), -1, dtype=torch.int64, device=dev)  # first non-finite step
        bad_loss = torch.zeros((), device=dev)
        session_seconds, session_steps = 0.0, 0
        first = len(self.history) + 1
        for epoch in range(first, cfg.epochs + 1):
            t0 = time.perf_counter()
            loss_sum.zero_()
            order = torch.randperm(len(self.x), device=dev, generator=self.gen)
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                xb = self.x[idx]  # (B, 3, R, R) uint8
                if padding or flip:
                    xb = augment_batch(xb, padding=padding, flip=flip, generator=self.gen)
                xb = self.norm(xb, channels_last=cfg.channels_last)  # (B, 3, R, R) float32
                with autocast(dev, self.amp):
                    loss = F.cross_entropy(self.model(xb), self.y[idx],
                                           label_smoothing=cfg.label_smoothing)
                self.opt.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.opt.step()
                lr = self.opt.param_groups[0]["lr"]  # the rate this step used
                self.sched.step()
                loss = loss.detach().float()
                loss_sum += loss
                newly_bad = (bad_step < 0) & ~torch.isfinite(loss)  # no sync: on the device
                bad_step = torch.where(newly_bad, torch.full_like(bad_step, i), bad_step)
                bad_loss = torch.where(newly_bad, loss, bad_loss)
                if (i + 1) % check_every and i + 1 != steps:
                    continue
                bad = int(bad_step.item())  # the sync
                elapsed = time.perf_counter() - t0
                if bad >= 0:
                    self.seconds += elapsed
                    self.images += (i + 1) * batch
                    kind = "nan" if math.isnan(bad_loss.item()) else "inf"
                    return "failed", self._failure(
                        f"non-finite loss ({kind}) at epoch {epoch}, step {bad + 1}")
                if self.progress is not None:
                    done = session_steps + i + 1
                    rate = (session_seconds + elapsed) / done  # seconds per step
                    left = (cfg.epochs - epoch + 1) * steps - (i + 1)
                    self.progress(TrainProgress(
                        kind="step", epoch=epoch, epochs=cfg.epochs, step=i + 1, steps=steps,
                        loss=loss_sum.item() / (i + 1), lr=lr,
                        images_per_second=batch / rate if rate > 0 else 0.0,
                        eta_seconds=left * rate))
            elapsed = time.perf_counter() - t0
            session_seconds += elapsed
            session_steps += steps
            self.seconds += elapsed
            self.images += steps * batch
            if cfg.bn_recalibrate:
                with autocast(dev, self.amp):
                    recalibrate_bn(self.model, self.x[order[:cfg.bn_recalibrate]],
                                   config=self.view, norm=self.norm)
            top1 = evaluate(self.model, self.eval_x, self.eval_y, config=self.view)
            self.model.train()
            if math.isnan(top1):
                return "failed", self._failure(
                    f"non-finite outputs (nan/inf) at evaluation after epoch {epoch}")
            record = EpochRecord(epoch=epoch, top1=top1, loss=loss_sum.item() / steps, lr=lr,
                                 seconds=self.seconds)
            self.history.append(record)
            self.save(epoch)
            if self.progress is not None:
                rate = session_seconds / session_steps
                self.progress(TrainProgress(
                    kind="epoch", epoch=epoch, epochs=cfg.epochs, step=steps, steps=steps,
                    loss=record.loss, lr=lr, images_per_second=batch / rate if rate else 0.0,
                    eta_seconds=(cfg.epochs - epoch) * steps * rate, top1=top1))
        return "finished", ""

    def _failure(self, what: str) -> str:
        kept = (f"the checkpoint of epoch {len(self.history)} is kept" if self.history
                else "no checkpoint was written")
        return f"{what}; {kept}; a lower learning rate may help"


# ---------------------------------------------------------------------------------------------
# ONNX


class OnnxExport(NamedTuple):
    path: Path
    opset: int
    resolution: int  # input (N, 3, resolution, resolution) float32, normalised
    checked_with: str  # "onnxruntime" (outputs compared) or "onnx.checker" (structure only)
    max_abs_diff: float | None  # largest |ONNX Runtime - PyTorch| logit; None with the checker


def export_onnx(model: nn.Module, path: str | os.PathLike, *, resolution: int,
                opset: int = ONNX_OPSET) -> OnnxExport:
    """Write ``model`` (a copy in eval mode, fp32, on CPU) as ONNX with a dynamic batch axis:
    input ``images`` (N, 3, resolution, resolution) float32 normalised with ImageNet mean/std,
    output ``logits`` (N, classes). Then check it: with ONNX Runtime if installed (outputs on a
    batch of another size must match PyTorch's within a tolerance), else with
    ``onnx.checker``. The file appears at ``path`` only once it has passed. Needs the onnx
    package (torch's exporter does); raises :class:`OnnxError` without it."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution: got {resolution!r}, expected an integer >= 8")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise ValueError(f"opset: got {opset!r}, expected an integer >= 17")
    if not onnx_available():
        raise OnnxError("exporting ONNX needs the onnx package (and onnxruntime to compare "
                        "outputs); install them with pip install 'ghostnas[onnx]'")
    path = Path(path)
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32,
                                    memory_format=torch.contiguous_format).eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, resolution, resolution, generator=gen)  # (2, 3, R, R)
    # The TorchScript-based exporter: the torch.export-based one needs onnxscript, which
    # is not a dependency; the one in use is chosen explicitly where torch offers both.
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own notice
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"],
                              output_names=["logits"], opset_version=opset,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              **kwargs)
        checked_with, diff = _check_onnx(tmp, model, resolution, path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return OnnxExport(path, opset, resolution, checked_with, diff)


def _check_onnx(file: Path, model: nn.Module, resolution: int,
                shown: Path) -> tuple[str, float | None]:
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        x = torch.randn(3, 3, resolution, resolution,  # another batch size than exported
                        generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            ref = model(x).numpy()  # (3, classes)
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        out = session.run(None, {"images": x.numpy()})[0]
        if out.shape != ref.shape:
            raise OnnxError(f"ONNX file {str(shown)!r}: output shape {out.shape} in ONNX "
                            f"Runtime, {ref.shape} in PyTorch")
        diff = float(np.abs(out - ref).max())
        tol = _ONNX_ATOL + _ONNX_RTOL * float(np.abs(ref).max())
        if not diff <= tol:
            raise OnnxError(f"ONNX file {str(shown)!r}: ONNX Runtime's outputs differ from "
                            f"PyTorch's by up to {diff:.3g} (tolerance {tol:.3g}); not written")
        return "onnxruntime", diff
    import onnx

    try:
        onnx.checker.check_model(str(file), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OnnxError(f"ONNX file {str(shown)!r} fails onnx.checker: {_one_line(exc, 200)}"
                        ) from None
    return "onnx.checker", None


def onnx_available() -> bool:
    """Whether :func:`export_onnx` can work: torch's exporter needs the onnx package."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True

