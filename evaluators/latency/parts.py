"""Parts: a network cut into standalone modules, each with its own input shape.

A part is the stem, one block, or the tail (final 1x1 conv, pooling, head and classifier). A
part's key (:class:`Part`) holds everything that changes its cost: for a Ghost bottleneck the
input side, cin, mid (#exp), cout, k, s, d, stride and SE; for a MobileNetV3 inverted residual
the input side, cin, exp, cout, k, stride, SE and activation. :func:`part_module` builds a
part from the networks' own builders (``space.ghostnet``, ``space.mobilenetv3``), so a part
is exactly the layers it stands for in the network.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, NamedTuple

import torch
from torch import nn

from evaluators.latency.errors import LatencyTableError
from space import ArchLike, MobileNetV3Arch, ghostnet, mobilenetv3
from space.checks import ArchitectureError, check_keys
from space.ghostnet import BlockPlan, GhostBottleneck
from space.mobilenetv3 import InvertedResidual, MBPlan

__all__ = ["PART_FIELDS", "MAX_PART_VALUE", "Part", "parts", "part_module",
           "part_input_channels", "side_out"]

PART_FIELDS: dict[str, tuple[str, ...]] = {
    # side = the part's input feature-map side in pixels
    "ghost_stem": ("side", "cout", "stride"),
    "ghost_block": ("side", "cin", "mid", "cout", "k", "s", "d", "stride", "se"),
    "ghost_tail": ("side", "cin", "final", "head", "num_classes"),
    "mbv3_stem": ("side", "cout", "stride"),
    "mbv3_block": ("side", "cin", "exp", "cout", "k", "stride", "se", "act"),
    "mbv3_tail": ("side", "cin", "last", "head", "num_classes"),
}
_BOOL_FIELDS = {"se"}
_STR_FIELDS = {"act": ("relu", "hswish")}
# Bound of a part's integer fields (and of a table's threads, batch and resolution, so that
# none overflows a float): every part of a valid architecture fits (65,536 base channels at
# width 16 are 1,048,576 channels, 6x that in MobileNetV3's last conv; 1,000,000 classes).
MAX_PART_VALUE = 1 << 23
# A part module's dropout: parts are only run in eval mode, where dropout does nothing.
_PART_DROPOUT = 0.2


class Part(NamedTuple):
    """A table key: the part's kind and its fields' values in ``PART_FIELDS[kind]`` order."""

    kind: str
    values: tuple

    def field(self, name: str) -> Any:
        return self.values[PART_FIELDS[self.kind].index(name)]

    def to_dict(self) -> dict[str, Any]:
        return {"part": self.kind, **dict(zip(PART_FIELDS[self.kind], self.values, strict=True))}

    @classmethod
    def from_dict(cls, data: Any, *, where: str, extra: tuple[str, ...] = ()) -> Part:
        """Parse a table entry's part; ``extra`` keys are allowed beside the fields."""
        kind = data.get("part") if isinstance(data, dict) else None
        if not isinstance(kind, str) or kind not in PART_FIELDS:  # a list is unhashable
            raise LatencyTableError(
                f"{where}.part: got {kind!r}, expected one of {', '.join(PART_FIELDS)}")
        names = PART_FIELDS[kind]
        try:
            check_keys(where, data, ("part", *names, *extra))
        except ArchitectureError as exc:
            raise LatencyTableError(str(exc)) from None
        values = []
        for name in names:
            v = data[name]
            if name in _BOOL_FIELDS:
                ok, allowed = isinstance(v, bool), "true or false"
            elif name in _STR_FIELDS:
                ok, allowed = v in _STR_FIELDS[name], f"one of {', '.join(_STR_FIELDS[name])}"
            else:
                ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PART_VALUE
                allowed = f"an integer from 1 to {MAX_PART_VALUE:,}"
            if not ok:
                raise LatencyTableError(f"{where}.{name}: got {v!r}, expected {allowed}")
            values.append(v)
        return cls(kind, tuple(values))


def side_out(side: int, k: int, stride: int) -> int:
    """Output side of a k x k conv with padding k // 2."""
    return (side + 2 * (k // 2) - k) // stride + 1


@functools.lru_cache(maxsize=65536)
def parts(arch: ArchLike, *, resolution: int = 224,
          stem_stride: int = 2) -> tuple[Part, ...]:
    """The parts of ``arch`` at ``resolution``, in network order: stem, blocks, tail."""
    out: list[Part] = []
    side = resolution
    if isinstance(arch, MobileNetV3Arch):
        stem, plans, last, head = arch.plan()
        out.append(Part("mbv3_stem", (side, stem, stem_stride)))
        side = side_out(side, 3, stem_stride)
        for p in plans:
            out.append(Part("mbv3_block", (side, p.cin, p.exp, p.cout, p.k, p.stride, p.se,
                                           p.act)))
            side = side_out(side, p.k, p.stride)
        out.append(Part("mbv3_tail", (side, plans[-1].cout, last, head, arch.num_classes)))
        return tuple(out)
    stem, plans, final = arch.plan()
    out.append(Part("ghost_stem", (side, stem, stem_stride)))
    side = side_out(side, 3, stem_stride)
    for p in plans:
        out.append(Part("ghost_block", (side, p.cin, p.mid, p.cout, p.k, p.s, p.d, p.stride,
                                        p.se)))
        if p.stride > 1:
            side = side_out(side, p.k, p.stride)
    out.append(Part("ghost_tail", (side, plans[-1].cout, final, arch.head, arch.num_classes)))
    return tuple(out)


class _GhostTail(nn.Module):
    """GhostNet's tail (``space.ghostnet.build_tail``), run as ``GhostNet`` runs it: the final
    ConvBnAct, then ``forward_head``."""

    def __init__(self, cin: int, final: int, head: int, num_classes: int) -> None:
        super().__init__()
        for name, layer in ghostnet.build_tail(cin, final, head, num_classes,
                                               dropout=_PART_DROPOUT).items():
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final(x)  # (N, final, H, W)
        x = self.act2(self.conv_head(self.global_pool(x)))  # (N, head, 1, 1)
        return self.classifier(self.dropout(x.flatten(1)))  # (N, num_classes)


class _MBTail(nn.Module):
    """MobileNetV3's tail (``space.mobilenetv3.build_tail``), run as ``MobileNetV3`` runs it:
    the last conv, then ``forward_head``."""

    def __init__(self, cin: int, last: int, head: int, num_classes: int) -> None:
        super().__init__()
        for name, layer in mobilenetv3.build_tail(cin, last, head, num_classes,
                                                  dropout=_PART_DROPOUT).items():
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(x)  # (N, last, H, W)
        return self.classifier(self.avgpool(x).flatten(1))  # (N, num_classes)


def part_module(part: Part) -> nn.Module:
    """A standalone module of ``part``, built by the network's own builders."""
    f = dict(zip(PART_FIELDS[part.kind], part.values, strict=True))
    if part.kind == "ghost_stem":
        return nn.Sequential(OrderedDict(ghostnet.build_stem(f["cout"], stride=f["stride"])))
    if part.kind == "ghost_block":
        return GhostBottleneck(BlockPlan(0, 0, f["cin"], f["mid"], f["cout"], f["k"], f["s"],
                                         f["d"], f["stride"], f["se"]))
    if part.kind == "ghost_tail":
        return _GhostTail(f["cin"], f["final"], f["head"], f["num_classes"])
    if part.kind == "mbv3_stem":
        return mobilenetv3.build_stem(f["cout"], stride=f["stride"])
    if part.kind == "mbv3_block":
        return InvertedResidual(MBPlan(0, f["cin"], f["exp"], f["cout"], f["k"], f["stride"],
                                       f["se"], f["act"]))
    return _MBTail(f["cin"], f["last"], f["head"], f["num_classes"])


def part_input_channels(part: Part) -> int:
    """Channels of the part's input: 3 (an image) for a stem, else ``cin``."""
    return 3 if part.kind.endswith("_stem") else part.field("cin")
