"""The pieces of supervised training shared by the proxy (evaluators/proxy.py) and from-scratch
training (evaluators/scratch/): model set-up, optimizer, schedule, one step, one epoch,
BatchNorm recalibration and evaluation.

Each piece is small and takes what it needs as arguments, not a whole configuration, so that
the two trainers (and later a CUDA-graph step, a data-parallel run or a streaming
:class:`~evaluators.batches.BatchSource`) can swap one without touching the others:

- :class:`TrainStep` is one optimisation step: forward under autocast, cross-entropy with label
  smoothing, backward, optimizer, learning-rate schedule;
- :func:`train_epoch` runs a step over one epoch of a batch source. The loss is summed on the
  device and checked for NaN/inf only every ``check_every`` steps and at the epoch's end
  (:class:`LossWatch`), so there is no host-device synchronisation per step where one costs;
- :func:`score` recomputes BatchNorm statistics with the current weights ("precise BN"), then
  evaluates; running averages lag the weights while the learning rate is high, which makes
  early-epoch figures (what early stopping acts on) mostly noise;
- :class:`WeightEMA` keeps an exponential moving average of the weights, updated after every
  step, for recipes that evaluate and keep the averaged network.

Mixed precision is CUDA-only: bf16 autocast on a CPU without native bf16 is many times slower
than fp32 (:func:`amp_dtype` refuses it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.batches import BatchSource
from evaluators.transforms import CROP_MODES, Normalizer, resize_images
from space.checks import UserError, check_float, check_int, shown

__all__ = ["AMP_CHOICES", "ConfigError", "EpochStats", "LossWatch", "TrainStep", "WeightEMA",
           "amp_dtype", "autocast", "batchnorms", "build_model", "check_settings", "evaluate",
           "grad_scaler", "isolated", "lr_factor", "param_groups", "recalibrate_bn",
           "score", "seed_generator", "sgd", "stem_stride_for", "top1_counts", "train_epoch",
           "warmup_cosine", "SMALL_INPUT"]

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


class ConfigError(UserError):
    """A training setting out of range; the message names the field."""


# The rule of every training setting, shared by ProxyConfig and TrainConfig so that a field
# the two have in common is checked (and worded) once.
_INTS = {"epochs": 1, "batch_size": 2, "resolution": 8, "eval_batch_size": 1, "seed": 0,
         "bn_recalibrate": 0, "warmup_epochs": 0, "threads": 1, "workers": 1,
         "ref_batch": 1}  # name -> minimum
_NUMBERS = {  # name -> (low, high, low allowed)
    "lr": (0.0, None, False), "momentum": (0.0, 1.0, True), "weight_decay": (0.0, None, True),
    "label_smoothing": (0.0, 1.0, True), "warmup_fraction": (0.0, 1.0, True),
    "crop_padding": (0.0, 0.5, True), "bn_momentum": (0.0, 1.0, False),
    "ref_lr": (0.0, None, False), "ema_decay": (0.0, 1.0, False)}
_FLAGS = ("augment", "flip", "channels_last", "nesterov", "sync_bn")


def check_settings(config: Any, *, optional: tuple[str, ...] = ()) -> None:
    """Check every field of the dataclass ``config`` by its rule; raise :class:`ConfigError`
    naming the first bad one. Fields in ``optional`` may also be None."""
    for f in dataclasses.fields(config):
        name, value = f.name, getattr(config, f.name)
        if value is None and name in optional:
            continue
        if name in _INTS:
            check_int(name, value, minimum=_INTS[name], error=ConfigError)
        elif name == "stem_stride":
            check_int(name, value, choices=(1, 2), error=ConfigError)
        elif name in _NUMBERS:
            low, high, low_inclusive = _NUMBERS[name]
            check_float(name, value, low=low, high=high, low_inclusive=low_inclusive,
                        error=ConfigError)
        elif name in _FLAGS:
            if not isinstance(value, bool):
                raise ConfigError(f"{name}: got {shown(value)}, expected true or false")
        elif name == "crop":
            if value not in CROP_MODES:
                raise ConfigError(f"crop: got {value!r}, expected one of {', '.join(CROP_MODES)}")
        elif name == "recipe":  # which names exist is the recipe table's question
            if not isinstance(value, str) or not value:
                raise ConfigError(f"recipe: got {shown(value)}, expected a recipe's name")
        elif name == "amp":
            if value not in AMP_CHOICES:
                raise ConfigError(f"amp: got {value!r}, expected one of {', '.join(AMP_CHOICES)}")
        elif name == "device":
            # its form only; whether this machine has it is resolve_device's question
            if not isinstance(value, str) or not (
                    value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
                raise ConfigError(f"device: got {value!r}, expected auto, cpu, cuda or cuda:N")
        else:
            raise AssertionError(f"no rule for the training setting {name!r}")


# ---------------------------------------------------------------------------------------------
# Where and how precisely it runs


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that the ``amp`` setting asks for on ``device``; None for fp32."""
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            raise ConfigError(f"amp: got {amp!r}, but mixed precision is CUDA-only (bf16 "
                              "on CPU is many times slower); use auto or off")
        return None
    if amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16, whose range underflows small gradients; None otherwise (bf16
    has fp32's range)."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


@contextlib.contextmanager
def isolated(device: torch.device, *, threads: int | None) -> Iterator[None]:
    """A block whose RNG seeding and ``torch.set_num_threads(threads)`` (CPU only; None leaves
    the count) do not leak: the caller's RNG states and thread count are restored after it."""
    previous = torch.get_num_threads()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(threads)
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        torch.set_num_threads(previous)


SMALL_INPUT = 64  # inputs below this side keep the stem at stride 1


def stem_stride_for(side: int) -> int:
    """The stem stride of a network trained at ``side`` px: 1 below :data:`SMALL_INPUT` (the
    usual CIFAR adaptation, so small inputs are not downsampled at once), else the deployment
    stem's 2."""
    return 1 if side < SMALL_INPUT else 2


def seed_generator(seed: int, device: torch.device) -> torch.Generator:
    """Seed the global RNG (weights, dropout) and return a generator on ``device`` seeded
    alike (batch order, augmentation). Call it inside :func:`isolated`."""
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune the convolutions once
    return gen


# ---------------------------------------------------------------------------------------------
# Model, optimizer, schedule


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def build_model(arch: Any, *, stem_stride: int, device: torch.device, channels_last: bool,
                bn_momentum: float) -> nn.Module:
    """``arch`` built for training on ``device``: NHWC if ``channels_last`` (oneDNN's depthwise
    convolutions and tensor cores are faster in it), training mode, and one momentum on every
    BatchNorm (torchvision's MobileNetV3 uses 0.01, whose running statistics are still far off
    after a short training)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = arch.build(stem_stride=stem_stride).to(device=device, memory_format=fmt).train()
    for bn in batchnorms(model):
        bn.momentum = bn_momentum
    return model


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: ``weight_decay`` on weight matrices and kernels, none on BatchNorm
    parameters and biases (decaying them only fights the normalisation)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and conv biases
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def sgd(model: nn.Module, device: torch.device, *, lr: float, momentum: float, nesterov: bool,
        weight_decay: float) -> torch.optim.SGD:
    """SGD over :func:`param_groups`; fused on CPU, where the default update is a Python loop
    over the parameters and costs a large share of a small network's step
    (benchmarks/train_step.py). CUDA keeps PyTorch's default (multi-tensor) update."""
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum,
                           nesterov=nesterov, fused=True if device.type == "cpu" else None)


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """Multiplier of the peak rate for optimizer step ``step`` (0-based): linear warm-up over
    ``warmup`` steps (BatchNorm networks at a high rate diverge less often when it starts
    small), then half a cosine to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(opt: torch.optim.Optimizer, *, warmup: int,
                  total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of :func:`lr_factor` over the optimizer's rate, stepped once per step."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup=warmup, total=total))


# ---------------------------------------------------------------------------------------------
# One step, one epoch


class TrainStep:
    """One optimisation step on a batch; returns the loss as a detached fp32 scalar on the
    device (reading it would synchronise, so callers sum it there)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler, *, amp: torch.dtype | None,
                 label_smoothing: float, scaler: torch.amp.GradScaler | None = None,
                 ema: WeightEMA | None = None,
                 reduce_loss: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """``ema`` is updated from ``ema_source`` (``model`` unwrapped) after every step;
        ``reduce_loss`` turns the step's loss into the one returned (data-parallel training
        averages it over the workers, so that all of them stop at the same non-finite one)."""
        self.model, self.opt, self.schedule = model, opt, schedule
        self.amp, self.label_smoothing, self.scaler = amp, label_smoothing, scaler
        self.ema, self.reduce_loss = ema, reduce_loss
        self.ema_source = getattr(model, "module", model)  # DistributedDataParallel's module
        self.device = next(model.parameters()).device
        self.lr = opt.param_groups[0]["lr"]  # the rate of the last step taken

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            loss = F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.lr = self.opt.param_groups[0]["lr"]
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.ema_source)
        loss = loss.detach().float()
        return loss if self.reduce_loss is None else self.reduce_loss(loss)


class LossWatch:
    """The sum of an epoch's losses and its first non-finite one, kept on the device: adding a
    loss never synchronises; :meth:`first_bad` and :meth:`mean` do."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device)
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # 0-based
        self.bad_loss = torch.zeros((), device=device)
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        newly_bad = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step = torch.where(newly_bad, self.step, self.bad_step)
        self.bad_loss = torch.where(newly_bad, loss, self.bad_loss)
        self.step += 1
        self.count += 1

    def first_bad(self) -> tuple[int, str] | None:
        """(1-based step, "nan" or "inf") of the first non-finite loss, or None."""
        bad = int(self.bad_step.item())
        if bad < 0:
            return None
        return bad + 1, "nan" if math.isnan(self.bad_loss.item()) else "inf"

    def mean(self) -> float:
        return self.total.item() / self.count


@dataclass(frozen=True)
class EpochStats:
    """What an epoch (or its first ``steps`` steps) did."""

    steps: int  # steps run
    seconds: float  # their wall time, up to the last synchronisation
    loss: float  # mean training loss of those steps
    lr: float  # the learning rate of the last of them
    bad_step: int = 0  # 1-based step of the first non-finite loss; 0 if none
    bad_kind: str = ""  # "nan" or "inf"

    def failure(self, epoch: int) -> str:
        """The one-line reason a non-finite loss stopped ``epoch``; "" if none did."""
        if not self.bad_step:
            return ""
        return f"non-finite loss ({self.bad_kind}) at epoch {epoch}, step {self.bad_step}"


def train_epoch(step: TrainStep, batches: BatchSource, *, check_every: int,
                on_check: Callable[[EpochStats], None] | None = None) -> EpochStats:
    """Run ``step`` over one epoch of ``batches``. Every ``check_every`` steps and at the end
    the losses are checked (a synchronisation); a non-finite one ends the epoch there, and
    otherwise ``on_check`` is told the epoch so far."""
    t0 = time.perf_counter()
    watch = LossWatch(step.device)
    for x, y in batches.epoch():
        watch.add(step(x, y))
        done = watch.count
        if done % check_every and done != batches.steps:
            continue
        bad = watch.first_bad()  # the sync; also ends the timing of the steps so far
        seconds = time.perf_counter() - t0
        if bad is not None:
            return EpochStats(done, seconds, watch.mean(), step.lr, *bad)
        if on_check is not None:
            on_check(EpochStats(done, seconds, watch.mean(), step.lr))
    return EpochStats(watch.count, time.perf_counter() - t0, watch.mean(), step.lr)


# ---------------------------------------------------------------------------------------------
# BatchNorm statistics and evaluation


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Recompute every BatchNorm's running statistics as the exact average over ``batches``
    (model inputs, each of two or more images) with the current weights. The model is left in
    training mode."""
    bns = batchnorms(model)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    for xb in batches:
        model(xb)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum


@torch.inference_mode()
def top1_counts(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                amp: torch.dtype | None = None, hits: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(correct predictions, images, all outputs finite) of ``model`` in eval mode over
    ``batches`` of model inputs and labels; the counts stay on the device (a data-parallel run
    sums them over its workers). The model's train/eval mode is restored afterwards. ``hits``,
    if given, receives each batch's per-image correctness (bool, on the device), in order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    images = 0
    for xb, yb in batches:
        with autocast(device, amp):
            logits = model(xb)  # (B, num_classes)
        right = logits.argmax(1) == yb  # (B,)
        correct += right.sum()
        if hits is not None:
            hits.append(right)
        finite &= torch.isfinite(logits).all()
        images += len(yb)
    model.train(was_training)
    return correct, images, finite


def evaluate(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *, resolution: int,
             batch_size: int = 512, channels_last: bool = True,
             amp: torch.dtype | None = None, hits: list[torch.Tensor] | None = None) -> float:
    """Top-1 (percent) of ``model`` on uint8 images (resized to ``resolution``), in eval mode,
    on the model's device; the model's train/eval mode is restored afterwards. NaN if any
    output is non-finite: weights that diverged in the last steps give NaN logits whose argmax
    would pass for a chance-level score."""
    if len(x_uint8) == 0 or len(x_uint8) != len(y):
        raise ValueError(f"evaluate: got {len(x_uint8)} images and {len(y)} labels")
    device = next(model.parameters()).device
    norm = Normalizer(device)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(x_uint8), batch_size):
            xb = x_uint8[i:i + batch_size].to(device, non_blocking=True)
            yield (norm(resize_images(xb, resolution), channels_last=channels_last),
                   y[i:i + batch_size].to(device, non_blocking=True))

    correct, images, finite = top1_counts(model, batches(), amp=amp, hits=hits)
    return 100.0 * correct.item() / images if bool(finite) else math.nan


def score(model: nn.Module, batches: BatchSource, x_uint8: torch.Tensor, y: torch.Tensor, *,
          recalibrate: int, resolution: int, batch_size: int, channels_last: bool,
          amp: torch.dtype | None, hits: list[torch.Tensor] | None = None) -> float:
    """:func:`evaluate` after recomputing the BatchNorm statistics on ``recalibrate`` training
    images of ``batches`` (0: keep the running averages). Leaves the model in training mode."""
    if recalibrate:
        with autocast(next(model.parameters()).device, amp):
            recalibrate_bn(model, batches.calibration(recalibrate))
    top1 = evaluate(model, x_uint8, y, resolution=resolution, batch_size=batch_size,
                    channels_last=channels_last, amp=amp, hits=hits)
    model.train()
    return top1


# ---------------------------------------------------------------------------------------------
# Weight averaging


class WeightEMA:
    """An exponential moving average of a model's weights and buffers, in a copy of the model.

    After update n the average moves towards the weights by ``1 - d`` with
    ``d = min(decay, (1 + n) / (10 + n))``: the number-of-updates warm-up of TensorFlow's
    ``ExponentialMovingAverage``, so that early averages are not dominated by the random
    initial weights (at decay 0.9999 those would weigh in for tens of thousands of steps).
    Integer buffers (BatchNorm's batch counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine, theirs = self.model.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        torch._foreach_lerp_([mine[k] for k in floats], [theirs[k] for k in floats], 1.0 - d)
        for k, v in mine.items():
            if not v.is_floating_point():
                v.copy_(theirs[k])

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
