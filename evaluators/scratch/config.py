"""The recipe of a from-scratch training: :class:`TrainConfig`, its per-data-set presets and the
rules that fill its open fields from the data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from evaluators.data import ImageData
from evaluators.training import ConfigError, check_settings

__all__ = ["TrainConfig", "TRAIN_PRESETS", "train_config", "BASE_LR", "BASE_BATCH",
           "SMALL_INPUT"]

BASE_LR = 0.1  # peak learning rate at BASE_BATCH images per step (SGD + Nesterov)
BASE_BATCH = 128
SMALL_INPUT = 64  # inputs below this side keep the stem at stride 1


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
        check_settings(self, optional=("lr", "resolution", "stem_stride", "threads"))
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov: needs momentum > 0; set nesterov=False for plain SGD")

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
