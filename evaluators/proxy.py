"""Proxy training: the accuracy evaluator of the search.

A candidate is trained from scratch for a few epochs at a small proxy resolution and scored by
top-1 on the held-out validation split (never trained on). The recipe is the same for candidates
and reference models, so their proxy accuracies are comparable:

- small-input adaptation: the network is built with ``stem_stride=1`` (instead of 2), so a
  32x32 image ends at 2x2 feature maps (4x4 before the last stage) instead of 1x1, the usual
  CIFAR adaptation of ImageNet networks. Candidates and reference models get the same one.
  FLOPs and latency are still counted at 224x224 with the deployment stem
  (evaluators/flops.py); only the proxy changes;
- SGD with Nesterov momentum, linear warm-up then cosine decay to zero over all steps, label
  smoothing, no weight decay on BatchNorm parameters and biases;
- augmentation on the device on whole batches: random crop with zero padding and (optionally)
  horizontal flip; normalisation with fixed ImageNet statistics (a constant, so a trained
  model needs no per-data-set numbers to be evaluated elsewhere; BatchNorm after the stem
  absorbs the difference to any data set's own statistics);
- every BatchNorm gets the same momentum (0.1; torchvision's MobileNetV3 uses 0.01, which
  leaves its running statistics unusable after a short proxy), and before each evaluation the
  statistics are recomputed on a few thousand training images with the current weights, so the
  per-epoch reports that early stopping acts on measure the weights, not lagging averages.

Speed: all images move to the device once as uint8 and are resized once to the proxy
resolution; an epoch is a seeded permutation, gathers, and on-device augmentation. The loss is
summed on the device and checked for NaN/inf every few steps and at each epoch's end, so the hot
loop has no host-device synchronisation per step. ``channels_last`` on model and inputs; bf16
(or fp16) autocast on CUDA only, never on CPU (bf16 there is ~15x slower on CPUs without
native bf16). Deterministic for a seed on CPU (same thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.data import ImageData
from evaluators.device import resolve_device
from space.checks import UserError

__all__ = ["ProxyConfig", "ConfigError", "EpochReport", "ProxyResult", "PRESETS", "STATUSES",
           "proxy_config", "train_proxy", "evaluate", "augment_batch", "normalize", "recalibrate_bn",
           "resize_images", "param_groups", "sgd", "amp_dtype", "autocast",
           "num_threads", "batchnorms", "Normalizer", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STATUSES = ("finished", "early_stopped", "failed")
AMP_CHOICES = ("auto", "off", "bf16", "fp16")
_CHECK_EVERY = 16  # steps between NaN/inf checks (one host-device sync each)


class ConfigError(UserError):
    """A proxy setting out of range; the message names the field."""


@dataclass(frozen=True)
class ProxyConfig:
    """How one proxy training runs. Defaults suit 32x32 data (CIFAR, image folders); see
    :data:`PRESETS` for per-data-set settings (the embedded digits use a lighter one)."""

    epochs: int = 5  # a short proxy: enough to rank candidates, cheap enough for dozens of them
    batch_size: int = 128  # the usual CIFAR batch: ~350 steps per CIFAR epoch, fits any device
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
    channels_last: bool = True  # NHWC: oneDNN's depthwise convs are much faster in it (measured
    # 1.3-1.5x for GhostNet training on a 2-core EPYC); tensor cores want it too
    # "off" (fp32): at the proxy's 32 px a step is launch-bound, and autocast's extra casts made
    # it slower on an H200 (5,195 vs 5,803 img/s, benchmarks/results/gpu_proxy_h200_partial.log).
    # "auto": bf16 (else fp16) on CUDA, fp32 on CPU, for larger inputs; or bf16/fp16.
    amp: str = "off"
    eval_batch_size: int = 512  # evaluation needs no gradients, so larger batches are cheap
    bn_momentum: float = 0.1  # set on every BatchNorm: torchvision's MobileNetV3 uses 0.01, whose
    # running statistics are still far off after a few hundred steps (top-1 at chance level)
    bn_recalibrate: int = 2048  # before each evaluation, recompute BatchNorm statistics on this
    # many training images (no augmentation; ~1.5% of a CIFAR epoch's work): running averages lag
    # the weights while the learning rate is high, which makes early-epoch reports (what early
    # stopping acts on) mostly noise; 0 = use the running averages

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 2), ("resolution", 8),
                              ("eval_batch_size", 1), ("seed", 0), ("bn_recalibrate", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name}: got {value!r}, expected an integer >= {minimum}")
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads: got {self.threads!r}, expected a positive integer or None")
        if self.stem_stride not in (1, 2) or isinstance(self.stem_stride, bool):
            raise ConfigError(f"stem_stride: got {self.stem_stride!r}, expected 1 or 2")
        for name, low, high in (("lr", 0.0, None), ("momentum", 0.0, 1.0),
                                ("weight_decay", 0.0, None), ("label_smoothing", 0.0, 1.0),
                                ("warmup_fraction", 0.0, 1.0), ("crop_padding", 0.0, 0.5),
                                ("bn_momentum", 0.0, 1.0)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value) and value >= low and (high is None or value < high)
            if name in ("lr", "bn_momentum"):
                ok = ok and value > 0
            if not ok:
                rule = f"> {low:g}" if name in ("lr", "bn_momentum") else f">= {low:g}"
                rule += "" if high is None else f" and < {high:g}"
                raise ConfigError(f"{name}: got {value!r}, expected a number {rule}")
        for name in ("augment", "flip", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: got {getattr(self, name)!r}, expected true or false")
        if self.amp not in AMP_CHOICES:
            raise ConfigError(f"amp: got {self.amp!r}, expected one of {', '.join(AMP_CHOICES)}")
        if not isinstance(self.device, str) or not (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device: got {self.device!r}, expected auto, cpu, cuda or cuda:N")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Per-data-set proxy settings (overrides of ProxyConfig's defaults). Digits are 8x8 and tiny:
# at 16x16 with stem stride 1 the maps shrink as 32x32 with the deployment stem (2x2 before the
# last stage); three epochs of 1,347 images in batches of 64 (lr scaled linearly from 0.2 at
# 128) take ~5-12 s per GhostNet on one CPU core; a flipped digit is a different digit.
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


# ---------------------------------------------------------------------------------------------
# Tensor helpers (reused by the from-scratch trainer)


def resize_images(x: torch.Tensor, size: int, *, chunk: int = 2048) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) uint8 on x's device; bilinear, antialiased when
    shrinking. Returns ``x`` itself when it already has that size."""
    n, c, h, w = x.shape
    if h == size and w == size:
        return x
    out = torch.empty((n, c, size, size), dtype=torch.uint8, device=x.device)
    shrink = size < h or size < w
    for i in range(0, n, chunk):  # chunks bound the float copy's memory
        y = F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=shrink)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def augment_batch(x: torch.Tensor, *, padding: int, flip: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding, then random horizontal flip, per image, as whole-batch
    tensor ops on x's device. (N, C, H, W) any dtype -> same shape and dtype."""
    n, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        xp = F.pad(x, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p)
        oy = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
        rows = (oy + torch.arange(h, device=dev)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
        x = xp.gather(2, rows)  # (N, C, H, W+2p)
        cols = (ox + torch.arange(w, device=dev)).view(n, 1, 1, w).expand(n, c, h, w)
        x = x.gather(3, cols)  # (N, C, H, W)
    if flip:
        mask = torch.rand(n, device=dev, generator=generator) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x


class Normalizer:
    """uint8 -> normalised float32 as one fused multiply-add; the constants live on the device."""

    def __init__(self, device: torch.device, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        m = torch.tensor(mean, dtype=torch.float32)
        s = torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * s)).view(1, 3, 1, 1).to(device)
        self.bias = (-m / s).view(1, 3, 1, 1).to(device)

    def __call__(self, x: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
        y = torch.addcmul(self.bias, x.float(), self.scale)  # (N, 3, H, W) float32
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def normalize(x: torch.Tensor, *, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD, channels_last: bool = False) -> torch.Tensor:
    """uint8 images (N, 3, H, W) in 0..255 -> float32 ``(x/255 - mean) / std``."""
    return Normalizer(x.device, mean, std)(x, channels_last=channels_last)


def amp_dtype(config: ProxyConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that ``config.amp`` asks for on ``device``; None for fp32."""
    if device.type != "cuda":
        if config.amp in ("bf16", "fp16"):
            raise ConfigError(f"amp: got {config.amp!r}, but mixed precision is CUDA-only (bf16 "
                              "on CPU is many times slower); use auto or off")
        return None
    if config.amp == "off":
        return None
    if config.amp == "fp16" or (config.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, config: ProxyConfig,
              device: torch.device, norm: Normalizer, amp: torch.dtype | None) -> float:
    """Top-1 in percent; NaN if any output is non-finite (weights that diverged in the last
    steps give NaN logits whose argmax would pass for a chance-level score)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    for i in range(0, len(x), config.eval_batch_size):
        xb = x[i:i + config.eval_batch_size].to(device, non_blocking=True)
        yb = y[i:i + config.eval_batch_size].to(device, non_blocking=True)
        xb = norm(resize_images(xb, config.resolution), channels_last=config.channels_last)
        with autocast(device, amp):
            logits = model(xb)  # (B, num_classes)
        correct += (logits.argmax(1) == yb).sum()
        finite &= torch.isfinite(logits).all()
    model.train(was_training)
    return 100.0 * correct.item() / len(x) if bool(finite) else math.nan


def evaluate(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, *,
             config: ProxyConfig) -> float:
    """Top-1 (percent) of ``model`` on uint8 images (resized to ``config.resolution``), in eval
    mode, on the model's device; the model's train/eval mode is restored afterwards. NaN if the
    model's outputs are not finite."""
    if len(x_uint8) == 0 or len(x_uint8) != len(y):
        raise ValueError(f"evaluate: got {len(x_uint8)} images and {len(y)} labels")
    device = next(model.parameters()).device
    return _evaluate(model, x_uint8, y, config=config, device=device, norm=Normalizer(device),
                     amp=amp_dtype(config, device))


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, *, config: ProxyConfig,
                   norm: Normalizer | None = None) -> None:
    """Recompute every BatchNorm's running statistics as the exact average over ``x`` (uint8,
    already at the proxy resolution, on the model's device) in training-size batches, with the
    current weights. The model is left in training mode."""
    norm = norm or Normalizer(x.device)
    bns = batchnorms(model)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    for i in range(0, len(x) - 1, config.batch_size):
        xb = x[i:i + config.batch_size]
        if len(xb) > 1:
            model(norm(xb, channels_last=config.channels_last))
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum


# ---------------------------------------------------------------------------------------------
# The trainer


@dataclass
class _Progress:
    """What survives an out-of-memory error: the finished epochs."""

    curve: list[EpochReport] = dataclasses.field(default_factory=list)
    images: int = 0
    train_seconds: float = 0.0


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
    """SGD over :func:`param_groups`; fused on CPU, where the default is a Python loop over the
    parameters (GhostNet 1.0x: the update takes 8.8-9.6 ms unfused, 3.7-3.9 ms fused;
    benchmarks/train_step.py). CUDA keeps PyTorch's default (multi-tensor) update."""
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum,
                           nesterov=nesterov, fused=True if device.type == "cpu" else None)


def _lr_at(step: int, total: int, config: ProxyConfig) -> float:
    warmup = int(config.warmup_fraction * total)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@contextlib.contextmanager
def num_threads(config: ProxyConfig, device: torch.device) -> Iterator[None]:
    """``torch.set_num_threads(config.threads)`` on CPU for the block, restored afterwards."""
    previous = torch.get_num_threads()
    if config.threads is not None and device.type == "cpu":
        torch.set_num_threads(config.threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_proxy(arch: Any, data: ImageData, config: ProxyConfig, *,
                report: Callable[[EpochReport], bool | None] | None = None,
                split: str = "val") -> ProxyResult:
    """Train ``arch`` (a GhostNet :class:`space.Architecture` or a MobileNetV3 reference) on
    ``data.train_x`` and score it on the held-out ``split`` ("val"; "test" for a final figure).

    ``report`` is called after every epoch; returning True stops the trial (status
    "early_stopped"). A NaN/inf loss or running out of memory returns status "failed" with the
    reason in ``error``; any other exception propagates.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split: got {split!r}, expected 'val' or 'test'")
    eval_x, eval_y = (data.val_x, data.val_y) if split == "val" else (data.test_x, data.test_y)
    if eval_x is None:
        raise ValueError(f"split: {data.name} has no official test set; use split='val'")
    device = resolve_device(config.device)
    amp = amp_dtype(config, device)
    progress = _Progress()
    start = time.perf_counter()
    oom = ""
    try:
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with num_threads(config, device), torch.random.fork_rng(devices=cuda):
            status, error = _train(arch, data, eval_x, eval_y, config, device, amp, report,
                                   progress)
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
        error=error, curve=tuple(progress.curve), wall_seconds=time.perf_counter() - start)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _train(arch: Any, data: ImageData, eval_x: torch.Tensor, eval_y: torch.Tensor,
           config: ProxyConfig, device: torch.device, amp: torch.dtype | None,
           report: Callable[[EpochReport], bool | None] | None,
           progress: _Progress) -> tuple[str, str]:
    """The training loop; fills ``progress`` and returns (status, error)."""
    torch.manual_seed(config.seed)  # weights and dropout (inside fork_rng: caller's RNG kept)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)  # batch order and augmentation
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune the convolutions once

    model = dataclasses.replace(arch, num_classes=data.num_classes).build(
        stem_stride=config.stem_stride)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format).train()
    for bn in batchnorms(model):
        bn.momentum = config.bn_momentum
    opt = sgd(model, device, lr=config.lr, momentum=config.momentum,
              nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    norm = Normalizer(device)

    # Once per trial: all images to the device as uint8, at the proxy resolution.
    x = resize_images(data.train_x.to(device), config.resolution)  # (N, 3, R, R) uint8
    y = data.train_y.to(device)  # (N,)
    ex = resize_images(eval_x.to(device), config.resolution)
    ey = eval_y.to(device)
    n = len(x)
    if n < 2:
        raise ValueError(f"{data.name}: need at least 2 training images, got {n}")
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: BatchNorm and timing stay steady
    total_steps = steps_per_epoch * config.epochs
    padding = round(config.crop_padding * config.resolution) if config.augment else 0
    flip = config.flip and config.augment

    loss_sum = torch.zeros((), device=device)
    bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # first non-finite step
    bad_loss = torch.zeros((), device=device)
    counter = torch.zeros((), dtype=torch.int64, device=device)  # global step, on the device
    step = 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        loss_sum.zero_()
        order = torch.randperm(n, device=device, generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            xb = x[idx]  # (B, 3, R, R) uint8
            if padding or flip:
                xb = augment_batch(xb, padding=padding, flip=flip, generator=gen)
            xb = norm(xb, channels_last=config.channels_last)  # (B, 3, R, R) float32
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total_steps, config)
            with autocast(device, amp):
                loss = F.cross_entropy(model(xb), y[idx], label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            loss = loss.detach().float()
            loss_sum += loss
            newly_bad = (bad_step < 0) & ~torch.isfinite(loss)  # no sync: stays on the device
            bad_step = torch.where(newly_bad, counter, bad_step)
            bad_loss = torch.where(newly_bad, loss, bad_loss)
            counter += 1
            step += 1
            if (i + 1) % _CHECK_EVERY == 0 or i + 1 == steps_per_epoch:
                first_bad = int(bad_step.item())  # the sync; also ends the epoch's timing
                if first_bad >= 0:
                    progress.train_seconds += time.perf_counter() - t0
                    progress.images += (i + 1) * batch
                    kind = "nan" if math.isnan(bad_loss.item()) else "inf"
                    return "failed", (f"non-finite loss ({kind}) at epoch "
                                      f"{first_bad // steps_per_epoch + 1}, step "
                                      f"{first_bad % steps_per_epoch + 1}")
        progress.train_seconds += time.perf_counter() - t0
        progress.images += steps_per_epoch * batch
        if config.bn_recalibrate:
            with autocast(device, amp):
                recalibrate_bn(model, x[order[:config.bn_recalibrate]], config=config, norm=norm)
        top1 = _evaluate(model, ex, ey, config=config, device=device, norm=norm, amp=amp)
        if math.isnan(top1):
            return "failed", f"non-finite outputs (nan/inf) at evaluation after epoch {epoch}"
        epoch_report = EpochReport(epoch=epoch, top1=top1,
                                   loss=loss_sum.item() / steps_per_epoch,
                                   seconds=progress.train_seconds, images=progress.images)
        progress.curve.append(epoch_report)
        if report is not None and report(epoch_report):
            return "early_stopped", ""
    return "finished", ""
