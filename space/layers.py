"""Pieces shared by the networks of the space and the reference models: the channel rounding
rule and layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PooledConv", "make_divisible"]


def make_divisible(value: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping below 90% of it.

    The one channel-rounding rule of GhostNet (divisor 4) and MobileNetV3 (divisor 8), as in the
    official implementations and timm. Every channel count in this project goes through here.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:  # rounding down must not remove more than 10% of the channels
        new_value += divisor
    return new_value


class PooledConv(nn.Conv2d):
    """A 1x1 conv (with bias by default) on globally pooled ``(N, C, 1, 1)`` maps: SE and heads.

    The parameters, ``state_dict`` keys and result of ``nn.Conv2d(cin, cout, 1)``, computed as
    a matrix product (``F.linear``): on CPU that is faster than oneDNN's convolution at 1x1
    spatial size (``benchmarks/train_step.py`` measures the step with and without it). Only for
    1x1 inputs.
    """

    def __init__(self, cin: int, cout: int, *, bias: bool = True) -> None:
        super().__init__(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, cin, 1, 1) -> (N, cout, 1, 1)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
