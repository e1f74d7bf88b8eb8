"""The recipe of a from-scratch training: :class:`TrainConfig`, its named recipes and
per-data-set presets, and the rules that fill its open fields from the data.

Precedence, for every setting and for the resolution in particular (:func:`pick_resolution`,
which ``search run`` shares): an explicit option, else the named recipe's value, else the data
set's preset, else the data set's native side (resolution) or TrainConfig's default.

The learning rate follows the linear scaling rule (Goyal et al., 2017): the recipe names a
reference rate ``ref_lr`` at a reference batch ``ref_batch``, and a run whose global batch (all
workers together) is B starts from ``ref_lr * B / ref_batch`` after warm-up, unless ``lr`` is
given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from evaluators.data import ImageData
from evaluators.training import SMALL_INPUT, ConfigError, check_settings, stem_stride_for

__all__ = ["TrainConfig", "TRAIN_PRESETS", "RECIPES", "DEFAULT_RECIPE", "train_config",
           "pick_resolution", "BASE_LR", "BASE_BATCH", "SMALL_INPUT"]

BASE_LR = 0.1  # small-data recipe: peak learning rate at BASE_BATCH images per step
BASE_BATCH = 128
DEFAULT_RECIPE = "small-data"


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
    recipe: str = DEFAULT_RECIPE  # the named recipe (RECIPES) the other defaults came from
    crop: str = "pad"  # "pad": random crop with zero padding at the resolution (small data);
    # "resized": random-resized crop, and resize to R/0.875 + centre crop R for evaluation
    ref_lr: float = BASE_LR  # linear scaling rule: peak rate ref_lr at ref_batch images a step
    ref_batch: int = BASE_BATCH
    ema_decay: float | None = None  # evaluate and keep an average of the weights; None: off
    workers: int = 1  # data-parallel processes; batch_size is their global batch
    sync_bn: bool = False  # BatchNorm statistics over the global batch (SyncBatchNorm on CUDA,
    # scratch/sync_bn.py elsewhere); off: each worker normalises by its own share

    def __post_init__(self) -> None:
        check_settings(self, optional=("lr", "resolution", "stem_stride", "threads",
                                       "ema_decay"))
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov: needs momentum > 0; set nesterov=False for plain SGD")
        if self.recipe not in RECIPES:
            raise ConfigError(f"recipe: got {self.recipe!r}, expected one of "
                              f"{', '.join(RECIPES)}")

    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up: ``lr``, or the linear scaling rule."""
        return self.lr if self.lr is not None else self.ref_lr * self.batch_size / self.ref_batch

    def resolve(self, data: ImageData) -> TrainConfig:
        """Fill the ``None`` fields for ``data``: resolution (native side), stem stride (small-input
        rule), batch (at most the training images) and learning rate (scaling rule)."""
        resolution = self.resolution if self.resolution is not None else max(data.image_size)
        if resolution < 8:
            raise ConfigError(f"resolution: {data.name} images are {resolution} px; set a "
                              "resolution >= 8")
        n = len(data.train_y)
        if n < 2 * self.workers:
            raise ConfigError(f"{data.name}: need at least {2 * self.workers} training images "
                              f"for {self.workers} worker(s), got {n}")
        if self.batch_size % self.workers:
            raise ConfigError(f"batch_size: got {self.batch_size}, which {self.workers} workers "
                              "cannot share evenly; give a multiple of the workers")
        batch = min(self.batch_size, n // self.workers * self.workers)
        stem = self.stem_stride if self.stem_stride is not None else \
            stem_stride_for(resolution)
        lr = self.lr if self.lr is not None else self.ref_lr * batch / self.ref_batch
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

# Named recipes: overrides of TrainConfig's defaults (which are the small-data recipe).
RECIPES: dict[str, dict[str, Any]] = {
    DEFAULT_RECIPE: {},
    # GhostNet's ImageNet training (Han et al., "GhostNet: More Features from Cheap Operations",
    # CVPR 2020). The paper's section 4.3 follows ShuffleNet's training settings except for the
    # learning rate; the authors point to megvii-model/ShuffleNet-Series for those
    # (iamhankai/ghostnet.pytorch issue 3; ShuffleNetV2+/train.py there) and filled in the rest
    # in the issues of their repositories.
    "ghostnet-imagenet": {
        "batch_size": 1024,  # paper 4.3, and argusswift/ghostnet.pytorch's README: 8 GPUs
        "ref_lr": 0.4, "ref_batch": 1024,  # paper 4.3 (same README): learning rate 0.4 there
        "epochs": 400,  # authors, iamhankai/ghostnet.pytorch issue 18: 400 epochs
        "warmup_epochs": 5,  # authors, iamhankai/ghostnet.pytorch issue 3: 5 epochs of warm-up,
        # then a cosine schedule (TrainConfig's schedule)
        "momentum": 0.9, "nesterov": False,  # ShuffleNetV2+/train.py: SGD, momentum 0.9
        "weight_decay": 4e-5,  # ShuffleNetV2+/train.py (none on BatchNorm, as here)
        "label_smoothing": 0.1,  # ShuffleNetV2+/train.py
        "resolution": 224, "crop": "resized", "flip": True,  # ShuffleNetV2+/train.py:
        # RandomResizedCrop(224) and flip; evaluation resize 256, centre crop 224
        # dropout 0.2 before the classifier is the architecture's (space/ghostnet.py); colour
        # jitter (0.4) is not implemented: see docs/training.md
    },
}


def pick_resolution(*, option: int | None, preset: int | None,
                    dataset: int | None) -> int | None:
    """The input side a run uses: the explicit option, else the named preset's (recipe or
    proxy preset), else the data set's default; None when none says (then the data's native
    side). ``search run --resolution`` follows the same rule."""
    for value in (option, preset, dataset):
        if value is not None:
            return value
    return None


def train_config(dataset: str, recipe: str = DEFAULT_RECIPE, **overrides: Any) -> TrainConfig:
    """TrainConfig for ``dataset`` (a key of :data:`TRAIN_PRESETS`) and the named ``recipe``
    (a key of :data:`RECIPES`), with ``overrides`` applied: overrides before the recipe, the
    recipe before the data set's preset."""
    if dataset not in TRAIN_PRESETS:
        raise ConfigError(f"dataset: got {dataset!r}, expected one of {', '.join(TRAIN_PRESETS)}")
    if recipe not in RECIPES:
        raise ConfigError(f"recipe: got {recipe!r}, expected one of {', '.join(RECIPES)}")
    data_preset, named = TRAIN_PRESETS[dataset], RECIPES[recipe]
    merged = {**data_preset, **named, **overrides, "recipe": recipe}
    merged["resolution"] = pick_resolution(option=overrides.get("resolution"),
                                           preset=named.get("resolution"),
                                           dataset=data_preset.get("resolution"))
    return TrainConfig.from_dict(merged)
