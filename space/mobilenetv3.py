"""MobileNetV3-Large/Small as reference models, structured exactly as torchvision builds them.

Howard et al., "Searching for MobileNetV3", ICCV 2019 (https://arxiv.org/abs/1905.02244).
Inverted residuals with hard-swish, SE squeezed to ``make_divisible(exp // 4, 8)`` with a
hard-sigmoid gate, channels rounded to multiples of 8; BatchNorm eps 1e-3, momentum 0.01.
They are references for the Pareto report, not points of the Ghost search space.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from space.checks import (
    ArchitectureError,
    check_bool,
    check_channels,
    check_classes,
    check_dropout,
    check_int,
    check_kernel,
    check_keys,
    check_version,
    check_width,
)
from space.ghostnet import FORMAT_VERSION
from space.layers import PooledConv, make_divisible
from space.registry import Published, register_model

__all__ = ["MBBlock", "MobileNetV3Arch", "MBPlan", "InvertedResidual", "MobileNetV3",
           "build_stem", "build_tail"]

CHANNEL_DIVISOR = 8
ACTIVATIONS = ("relu", "hswish")


@dataclass(frozen=True)
class MBBlock:
    """One inverted residual in base channels."""

    k: int
    exp: int
    out: int
    se: bool
    act: str  # "relu" or "hswish"
    stride: int = 1

    KEYS: ClassVar[tuple[str, ...]] = ("k", "exp", "out", "se", "act", "stride")

    def __post_init__(self) -> None:
        check_kernel("block.k", self.k)
        check_channels("block.exp", self.exp)
        check_channels("block.out", self.out)
        check_bool("block.se", self.se)
        if self.act not in ACTIVATIONS:
            raise ArchitectureError(f"block.act: got {self.act!r}, expected one of {ACTIVATIONS}")
        check_int("block.stride", self.stride, choices=(1, 2))

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.KEYS}


class MBPlan(NamedTuple):
    index: int
    cin: int
    exp: int
    cout: int
    k: int
    stride: int
    se: bool
    act: str


@dataclass(frozen=True)
class MobileNetV3Arch:
    """A MobileNetV3 table. Unlike GhostNet, the head (``last_channel``) is width-scaled, as in
    torchvision, and the last 1x1 conv has 6x the last block's output channels."""

    blocks: tuple[MBBlock, ...]
    width: float = 1.0
    stem: int = 16
    head: int = 1280
    num_classes: int = 1000
    dropout: float = 0.2

    family: ClassVar[str] = "mobilenetv3"
    KEYS: ClassVar[tuple[str, ...]] = ("family", "width", "stem", "head", "num_classes",
                                       "dropout", "blocks")

    def __post_init__(self) -> None:
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks or not all(isinstance(b, MBBlock) for b in self.blocks):
            raise ArchitectureError("blocks: expected a non-empty list of blocks")
        object.__setattr__(self, "width", check_width("width", self.width))
        check_channels("stem", self.stem)
        check_channels("head", self.head)
        check_classes("num_classes", self.num_classes)
        object.__setattr__(self, "dropout", check_dropout("dropout", self.dropout))

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def channels(self, base: int) -> int:
        return make_divisible(base * self.width, CHANNEL_DIVISOR)

    def plan(self) -> tuple[int, tuple[MBPlan, ...], int, int]:
        """(stem, resolved blocks, last-conv channels, head channels)."""
        return _plan(self)

    def canonical(self) -> MobileNetV3Arch:
        """Every field of a MobileNetV3 table acts on the network: it is its own key."""
        return self

    def describe(self) -> str:
        se = sum(b.se for b in self.blocks)
        return f"MobileNetV3 w{self.width:g} | {len(self.blocks)} blocks, se{se}"

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "family": self.family, "width": self.width,
                "stem": self.stem, "head": self.head, "num_classes": self.num_classes,
                "dropout": self.dropout, "blocks": [b.to_dict() for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: Any) -> MobileNetV3Arch:
        check_keys("architecture", data, cls.KEYS, optional=("version",))
        check_version(data, FORMAT_VERSION)
        blocks = data["blocks"]
        if not isinstance(blocks, list) or not blocks:
            raise ArchitectureError(f"blocks: got {blocks!r}, expected a non-empty list of blocks")
        parsed = []
        for i, b in enumerate(blocks):
            check_keys(f"blocks[{i}]", b, MBBlock.KEYS)
            try:
                parsed.append(MBBlock(**b))
            except ArchitectureError as exc:
                raise ArchitectureError(str(exc).replace("block.", f"blocks[{i}].", 1)) from None
        return cls(blocks=tuple(parsed), width=data["width"], stem=data["stem"], head=data["head"],
                   num_classes=data["num_classes"], dropout=data["dropout"])

    def build(self, *, stem_stride: int = 2) -> MobileNetV3:
        return MobileNetV3(self, stem_stride=stem_stride)


@functools.lru_cache(maxsize=256)
def _plan(arch: MobileNetV3Arch) -> tuple[int, tuple[MBPlan, ...], int, int]:
    stem = arch.channels(arch.stem)
    cin = stem
    plans = []
    for i, b in enumerate(arch.blocks):
        cout = arch.channels(b.out)
        plans.append(MBPlan(i, cin, arch.channels(b.exp), cout, b.k, b.stride, b.se, b.act))
        cin = cout
    return stem, tuple(plans), 6 * cin, arch.channels(arch.head)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=0.001, momentum=0.01)


def _act(name: str) -> nn.Module:
    return nn.Hardswish(inplace=True) if name == "hswish" else nn.ReLU(inplace=True)


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 act: str | None = None) -> nn.Sequential:
    """Conv, BN[, activation] as torchvision's ``nn.Sequential`` (state-dict keys ``0``, ``1``),
    so that torchvision's weights load; GhostNet's ConvBnAct names them as the official GhostNet
    code does, which is why the two families keep their own."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               _bn(cout)]
    if act is not None:
        layers.append(_act(act))
    return nn.Sequential(*layers)


class _SqueezeExcitation(nn.Module):
    """torchvision's SE, with its parameter names (``fc1``, ``fc2``) so that its weights load;
    GhostNet's SqueezeExcite has the official GhostNet code's names and its own squeeze rule."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = make_divisible(channels // 4, CHANNEL_DIVISOR)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = PooledConv(channels, squeeze)
        self.activation = nn.ReLU()
        self.fc2 = PooledConv(squeeze, channels)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))  # (N, C, 1, 1)
        return x * self.scale_activation(scale)


class InvertedResidual(nn.Module):
    """[1x1 expansion] -> k x k depthwise (stride) -> [SE] -> 1x1 projection [+ identity]."""

    def __init__(self, p: MBPlan) -> None:
        super().__init__()
        self.use_res_connect = p.stride == 1 and p.cin == p.cout
        layers: list[nn.Module] = []
        if p.exp != p.cin:
            layers.append(_conv_bn_act(p.cin, p.exp, 1, act=p.act))
        layers.append(_conv_bn_act(p.exp, p.exp, p.k, p.stride, groups=p.exp, act=p.act))
        if p.se:
            layers.append(_SqueezeExcitation(p.exp))
        layers.append(_conv_bn_act(p.exp, p.cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


def build_stem(cout: int, *, stride: int) -> nn.Sequential:
    """MobileNetV3's stem: 3x3 conv (N, 3, H, W) -> (N, cout, H/stride, W/stride), BN,
    hard-swish; the network's ``features[0]`` and the latency table's stem part."""
    return _conv_bn_act(3, cout, 3, stride, act="hswish")


def build_tail(cin: int, last: int, head: int, num_classes: int, *,
               dropout: float) -> dict[str, nn.Module]:
    """Everything after the last block, in the order it runs: the last 1x1 conv (cin -> last,
    hard-swish), pooling, and the classifier (Linear to ``head``, hard-swish, dropout, Linear).

    Keyed by torchvision's names: the network puts ``last`` at the end of ``features`` and
    holds the rest at its top level, so that state-dict keys load torchvision's weights; the
    latency table's tail part is built here too. Layers are created in this order, which is
    also the order they draw from the random generator at initialisation.
    """
    return {"last": _conv_bn_act(cin, last, 1, act="hswish"),
            "avgpool": nn.AdaptiveAvgPool2d(1),
            "classifier": nn.Sequential(
                nn.Linear(last, head), nn.Hardswish(inplace=True),
                nn.Dropout(dropout, inplace=True), nn.Linear(head, num_classes))}


class MobileNetV3(nn.Module):
    """The network of a :class:`MobileNetV3Arch`, laid out as torchvision's (the same
    state-dict keys); keeps the value in ``self.arch``."""

    def __init__(self, arch: MobileNetV3Arch, *, stem_stride: int = 2) -> None:
        super().__init__()
        check_int("stem_stride", stem_stride, choices=(1, 2))
        self.arch = arch
        self.stem_stride = stem_stride
        stem, plans, last_conv, head = arch.plan()
        layers: list[nn.Module] = [build_stem(stem, stride=stem_stride)]
        layers += [InvertedResidual(p) for p in plans]
        tail = build_tail(plans[-1].cout, last_conv, head, arch.num_classes,
                          dropout=arch.dropout)
        layers.append(tail["last"])
        self.features = nn.Sequential(*layers)
        self.avgpool = tail["avgpool"]
        self.classifier = tail["classifier"]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, last_conv, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(x).flatten(1))  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# torchvision's tables: (k, exp, out, se, act, stride); stem 16.
_LARGE = (
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)
_SMALL = (
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2), (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1), (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1), (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1), (5, 576, 96, True, "hswish", 1),
)

_PAPER = "Howard et al., Searching for MobileNetV3, ICCV 2019, Tables 3-4 (ImageNet)"


def _arch(table: tuple, head: int) -> MobileNetV3Arch:
    return MobileNetV3Arch(blocks=tuple(MBBlock(*row) for row in table), head=head)


@register_model(Published(top1=75.2, flops=219_000_000, params=5_400_000, source=_PAPER))
def mobilenetv3_large_100() -> MobileNetV3Arch:
    return _arch(_LARGE, 1280)


@register_model(Published(top1=67.4, flops=56_000_000, params=2_500_000, source=_PAPER))
def mobilenetv3_small_100() -> MobileNetV3Arch:
    return _arch(_SMALL, 1024)
