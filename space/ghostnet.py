"""GhostNet: Ghost modules, Ghost bottlenecks, the stage table as a value, and the network.

Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020
(https://arxiv.org/abs/1911.11907). Structure follows the official implementation
(huawei-noah/Efficient-AI-Backbones, ghostnet_pytorch/ghostnet.py), generalised so that every
block has its own Ghost ratio ``s`` and cheap-operation kernel ``d``. With ``s=2, d=3``
everywhere and the paper's table, the parameter count equals the official one exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from space.checks import (
    ArchitectureError,
    check_bool,
    check_channels,
    check_classes,
    check_dropout,
    check_ghost_ratio,
    check_int,
    check_kernel,
    check_keys,
    check_version,
    check_width,
)
from space.layers import PooledConv, make_divisible
from space.registry import Published, register_model

__all__ = [
    "Block", "Architecture", "BlockPlan", "GhostModule", "SqueezeExcite", "GhostBottleneck",
    "ConvBnAct", "GhostNet", "build_stem", "build_tail", "ghostnet_arch", "CHANNEL_DIVISOR",
    "SE_RATIO", "FORMAT_VERSION",
]

CHANNEL_DIVISOR = 4  # GhostNet rounds every width-scaled channel count to a multiple of 4
SE_RATIO = 0.25  # squeeze to a quarter of the expanded channels (then rounded, divisor 4)
FORMAT_VERSION = 1  # the "version" key written to architecture files


def channels(base: int, width: float) -> int:
    """Built channels of ``base`` channels at ``width``: the one rule, make_divisible(., 4)."""
    return make_divisible(base * width, CHANNEL_DIVISOR)


@dataclass(frozen=True)
class Block:
    """One Ghost bottleneck, in base (width 1.0) channels."""

    k: int  # depthwise kernel of the stride-2 conv and of the conv shortcut
    exp: int  # expansion size (#exp): output channels of the first Ghost module
    out: int  # output channels of the block
    se: bool  # squeeze-and-excitation after the expansion
    s: int = 2  # Ghost ratio: 1/s of the maps come from the primary conv, the rest are cheap
    d: int = 3  # kernel of the cheap depthwise operation
    stride: int = 1

    KEYS: ClassVar[tuple[str, ...]] = ("k", "exp", "out", "se", "s", "d", "stride")

    def __post_init__(self) -> None:
        self.validate("block")
        # Blocks are dictionary keys on the search's hot path (FLOPs and latency caches):
        # hash once, not field by field on every lookup.
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, k) for k in self.KEYS)))

    def __hash__(self) -> int:
        return self._hash

    def validate(self, where: str) -> None:
        check_kernel(f"{where}.k", self.k)
        check_channels(f"{where}.exp", self.exp)
        check_channels(f"{where}.out", self.out)
        check_bool(f"{where}.se", self.se)
        check_ghost_ratio(f"{where}.s", self.s)
        check_kernel(f"{where}.d", self.d)
        check_int(f"{where}.stride", self.stride, choices=(1, 2))

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.KEYS}

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "block") -> Block:
        check_keys(where, data, cls.KEYS)
        try:
            return cls(**data)
        except ArchitectureError as exc:  # re-raise with the block's position in the file
            raise ArchitectureError(str(exc).replace("block.", f"{where}.", 1)) from None


class BlockPlan(NamedTuple):
    """A block with its channel counts resolved for the architecture's width."""

    stage: int
    index: int  # position within its stage
    cin: int
    mid: int
    cout: int
    k: int
    s: int
    d: int
    stride: int
    se: bool


@dataclass(frozen=True)
class Architecture:
    """A GhostNet stage table: the unit that is searched, cached, saved and built.

    ``stem``, ``exp`` and ``out`` are base channels; built channels are
    ``make_divisible(base * width, 4)``. The final 1x1 conv goes to
    ``make_divisible(last block's exp * width, 4)``; ``head`` (the 1x1 conv before the
    classifier) is not width-scaled, as in the official code.
    """

    stages: tuple[tuple[Block, ...], ...]
    width: float = 1.0
    stem: int = 16
    head: int = 1280
    num_classes: int = 1000
    dropout: float = 0.2

    family: ClassVar[str] = "ghostnet"
    KEYS: ClassVar[tuple[str, ...]] = ("width", "stem", "head", "num_classes", "dropout", "stages")

    def __post_init__(self) -> None:
        # Accept lists from Python callers, store tuples so the value stays hashable.
        if isinstance(self.stages, list) or (
                isinstance(self.stages, tuple) and any(isinstance(s, list) for s in self.stages)):
            object.__setattr__(self, "stages", tuple(
                tuple(stage) if isinstance(stage, list) else stage for stage in self.stages))
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ArchitectureError(
                f"stages: got {self.stages!r}, expected a non-empty list of stages")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, tuple) or not stage:
                raise ArchitectureError(
                    f"stages[{i}]: got {stage!r}, expected a non-empty list of blocks")
            for j, block in enumerate(stage):
                if not isinstance(block, Block):
                    raise ArchitectureError(
                        f"stages[{i}][{j}]: got {type(block).__name__}, expected a Block")
        check_width("width", self.width)
        object.__setattr__(self, "width", float(self.width))
        check_channels("stem", self.stem)
        check_channels("head", self.head)
        check_classes("num_classes", self.num_classes)
        object.__setattr__(self, "dropout", check_dropout("dropout", self.dropout))

    # -- views ---------------------------------------------------------------------------

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for stage in self.stages for b in stage)

    @property
    def depth(self) -> int:
        return sum(len(stage) for stage in self.stages)

    def channels(self, base: int) -> int:
        """Built channel count for a base channel count at this architecture's width."""
        return channels(base, self.width)

    def plan(self) -> tuple[int, tuple[BlockPlan, ...], int]:
        """(stem channels, resolved blocks, final-conv channels): the one place channels are set."""
        return _plan(self)

    def canonical(self) -> Architecture:
        """The same network with every *unused* ``k`` set to 3: the key for "same architecture".

        ``k`` only acts in a block with a strided depthwise conv or a conv shortcut; two tables
        that differ only in an unused ``k`` build identical networks (same weights, FLOPs and
        latency), so caches and de-duplication key on this value.
        """
        plans = self.plan()[1]
        stages, it = [], iter(plans)
        for stage in self.stages:
            blocks = []
            for b in stage:
                p = next(it)
                used = p.stride > 1 or p.cin != p.cout
                blocks.append(b if used or b.k == 3 else dataclasses.replace(b, k=3))
            stages.append(tuple(blocks))
        return dataclasses.replace(self, stages=tuple(stages))

    def describe(self) -> str:
        """One line: width, then per stage ``out x depth`` with the s/d/SE mix, e.g. for hovers."""
        parts = []
        for stage in self.stages:
            ss = "/".join(sorted({str(b.s) for b in stage}))
            ds = "/".join(sorted({str(b.d) for b in stage}))
            se = sum(b.se for b in stage)
            tag = f"{stage[-1].out}x{len(stage)} s{ss} d{ds}"
            if se:
                tag += f" se{se}"
            parts.append(tag)
        return f"w{self.width:g} | " + " | ".join(parts)

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "width": self.width,
            "stem": self.stem,
            "head": self.head,
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "stages": [[b.to_dict() for b in stage] for stage in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        """Read the JSON object of an architecture file; never mutates ``data``."""
        check_keys("architecture", data, cls.KEYS, optional=("version", "family"))
        check_version(data, FORMAT_VERSION)
        if "family" in data and data["family"] != cls.family:
            raise ArchitectureError(f"family: got {data['family']!r}, expected {cls.family!r}")
        stages = data["stages"]
        if not isinstance(stages, list) or not stages:
            raise ArchitectureError(
                f"stages: got {stages!r}, expected a non-empty list of stages")
        parsed = []
        for i, stage in enumerate(stages):
            if not isinstance(stage, list) or not stage:
                raise ArchitectureError(
                    f"stages[{i}]: got {stage!r}, expected a non-empty list of blocks")
            parsed.append(tuple(
                Block.from_dict(b, where=f"stages[{i}][{j}]") for j, b in enumerate(stage)))
        return cls(stages=tuple(parsed), width=data["width"], stem=data["stem"],
                   head=data["head"], num_classes=data["num_classes"], dropout=data["dropout"])

    # -- building ----------------------------------------------------------------------------

    def build(self, *, stem_stride: int = 2) -> GhostNet:
        return GhostNet(self, stem_stride=stem_stride)


@functools.lru_cache(maxsize=65536)
def _plan(arch: Architecture) -> tuple[int, tuple[BlockPlan, ...], int]:
    stem = arch.channels(arch.stem)  # every channel count of the network is set here
    cin = stem
    plans = []
    for i, stage in enumerate(arch.stages):
        for j, b in enumerate(stage):
            cout = arch.channels(b.out)
            plans.append(BlockPlan(i, j, cin, arch.channels(b.exp), cout, b.k, b.s, b.d,
                                   b.stride, b.se))
            cin = cout
    final = arch.channels(arch.stages[-1][-1].exp)
    return stem, tuple(plans), final


# ---------------------------------------------------------------------------------------------
# Modules


class GhostModule(nn.Module):
    """``out`` maps: ceil(out/s) from a 1x1 conv, the rest from a depthwise d x d conv of those."""

    def __init__(self, cin: int, cout: int, *, s: int = 2, d: int = 3, relu: bool = True) -> None:
        super().__init__()
        self.cout = cout
        init = math.ceil(cout / s)
        cheap = init * (s - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(cin, init, 1, 1, 0, bias=False),
            nn.BatchNorm2d(init),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init, cheap, d, 1, d // 2, groups=init, bias=False),
            nn.BatchNorm2d(cheap),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)  # (N, init, H, W)
        x2 = self.cheap_operation(x1)  # (N, init*(s-1), H, W)
        return torch.cat([x1, x2], dim=1)[:, :self.cout]  # (N, cout, H, W)


class SqueezeExcite(nn.Module):
    """SE with a hard-sigmoid gate; squeezes to make_divisible(channels * 0.25, 4).

    Its parameter names (``conv_reduce``, ``conv_expand``) are the official GhostNet code's, so
    that published weights load; MobileNetV3's SE names them as torchvision does (``fc1``,
    ``fc2``), which is why the two families keep separate SE classes.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        reduced = make_divisible(channels * SE_RATIO, CHANNEL_DIVISOR)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = PooledConv(channels, reduced)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = PooledConv(reduced, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_se = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))  # (N, C, 1, 1)
        return x * F.hardsigmoid(x_se)


class GhostBottleneck(nn.Module):
    """Ghost module (ReLU) -> [depthwise k x k stride 2 + BN] -> [SE] -> Ghost module (linear) + shortcut."""

    def __init__(self, plan: BlockPlan) -> None:
        super().__init__()
        cin, mid, cout, k, stride = plan.cin, plan.mid, plan.cout, plan.k, plan.stride
        self.stride = stride
        self.ghost1 = GhostModule(cin, mid, s=plan.s, d=plan.d, relu=True)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid) if plan.se else None
        self.ghost2 = GhostModule(mid, cout, s=plan.s, d=plan.d, relu=False)
        if cin == cout and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cin, k, stride, k // 2, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.ghost1(x)  # (N, mid, H, W)
        if self.stride > 1:
            x = self.bn_dw(self.conv_dw(x))  # (N, mid, H/2, W/2)
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)  # (N, cout, H', W')
        return x + self.shortcut(residual)


class ConvBnAct(nn.Module):
    """Conv, BN, ReLU under the official GhostNet code's names (``conv``, ``bn1``), the
    state-dict keys of published weights; MobileNetV3's conv-BN-activation is torchvision's
    ``nn.Sequential`` (keys ``0``, ``1``), so the two families keep their own."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


def build_stem(cout: int, *, stride: int) -> dict[str, nn.Module]:
    """GhostNet's stem, in the order it runs: 3x3 conv (N, 3, H, W) -> (N, cout, H/stride,
    W/stride), BN, ReLU.

    Keyed by the official code's names, which the network uses for its own attributes so that
    its state-dict keys (``conv_stem.weight``, ``bn1.*``) load published weights; the latency
    table's stem part is built here too, so the two cannot differ.
    """
    return {"conv_stem": nn.Conv2d(3, cout, 3, stride, 1, bias=False),
            "bn1": nn.BatchNorm2d(cout),
            "act1": nn.ReLU(inplace=True)}


def build_tail(cin: int, final: int, head: int, num_classes: int, *,
               dropout: float) -> dict[str, nn.Module]:
    """Everything after the last block, in the order it runs: the final 1x1 ConvBnAct
    (cin -> final), global pooling, the 1x1 ``conv_head`` (final -> head), ReLU, dropout and
    the classifier (head -> num_classes).

    Keyed by the official code's names: the network puts ``final`` in its last stage and holds
    the rest at its top level, as the official code does, so that state-dict keys load
    published weights; the latency table's tail part is built here too. Layers are created in
    this order, which is also the order they draw from the random generator at initialisation.
    """
    return {"final": ConvBnAct(cin, final, 1),
            "global_pool": nn.AdaptiveAvgPool2d(1),
            "conv_head": PooledConv(final, head),
            "act2": nn.ReLU(inplace=True),
            "dropout": nn.Dropout(dropout),
            "classifier": nn.Linear(head, num_classes)}


class GhostNet(nn.Module):
    """The network of an :class:`Architecture`; keeps the value in ``self.arch``.

    ``stem_stride=1`` is the small-input adaptation used for proxy training at 32x32
    (see evaluators/proxy.py); deployment cost is always counted with the default 2.
    """

    def __init__(self, arch: Architecture, *, stem_stride: int = 2) -> None:
        super().__init__()
        check_int("stem_stride", stem_stride, choices=(1, 2))
        self.arch = arch
        self.stem_stride = stem_stride
        stem, plans, final = arch.plan()
        for name, layer in build_stem(stem, stride=stem_stride).items():
            self.add_module(name, layer)  # conv_stem, bn1, act1
        stages: list[nn.Module] = []
        for i in range(len(arch.stages)):
            stages.append(nn.Sequential(*(GhostBottleneck(p) for p in plans if p.stage == i)))
        tail = build_tail(plans[-1].cout, final, arch.head, arch.num_classes,
                          dropout=arch.dropout)
        stages.append(nn.Sequential(tail.pop("final")))
        self.blocks = nn.Sequential(*stages)
        for name, layer in tail.items():
            self.add_module(name, layer)  # global_pool, conv_head, act2, dropout, classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))  # (N, stem, H/2, W/2)
        return self.blocks(x)  # (N, final, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv_head(self.global_pool(x)))  # (N, head, 1, 1)
        return self.classifier(self.dropout(x.flatten(1)))  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------
# The paper's stage table (Table 1), grouped into stages by output channels.
# Columns: k (depthwise kernel), exp (#exp), out (#out), se, stride.

_GHOSTNET_TABLE: tuple[tuple[tuple[int, int, int, bool, int], ...], ...] = (
    ((3, 16, 16, False, 1),),
    ((3, 48, 24, False, 2), (3, 72, 24, False, 1)),
    ((5, 72, 40, True, 2), (5, 120, 40, True, 1)),
    ((3, 240, 80, False, 2), (3, 200, 80, False, 1), (3, 184, 80, False, 1),
     (3, 184, 80, False, 1)),
    ((3, 480, 112, True, 1), (3, 672, 112, True, 1)),
    ((5, 672, 160, True, 2), (5, 960, 160, False, 1), (5, 960, 160, True, 1),
     (5, 960, 160, False, 1), (5, 960, 160, True, 1)),
)


def ghostnet_arch(width: float = 1.0, *, num_classes: int = 1000, dropout: float = 0.2) -> Architecture:
    """The paper's GhostNet at a width multiplier (s=2, d=3 everywhere)."""
    stages = tuple(
        tuple(Block(k=k, exp=e, out=o, se=se, s=2, d=3, stride=st) for k, e, o, se, st in stage)
        for stage in _GHOSTNET_TABLE)
    return Architecture(stages=stages, width=width, stem=16, head=1280,
                        num_classes=num_classes, dropout=dropout)


_PAPER = "Han et al., GhostNet, CVPR 2020, Table 7 (ImageNet)"


@register_model(Published(top1=66.2, flops=42_000_000, params=2_600_000, source=_PAPER))
def ghostnet_050() -> Architecture:
    return ghostnet_arch(0.5)


@register_model(Published(top1=73.9, flops=141_000_000, params=5_200_000, source=_PAPER))
def ghostnet_100() -> Architecture:
    return ghostnet_arch(1.0)


@register_model(Published(top1=75.7, flops=226_000_000, params=7_300_000, source=_PAPER))
def ghostnet_130() -> Architecture:
    return ghostnet_arch(1.3)
