"""Layers shared by the networks of the space and the reference models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PooledConv"]


class PooledConv(nn.Conv2d):
    """A 1x1 conv (with bias by default) on globally pooled ``(N, C, 1, 1)`` maps: SE and heads.

    The parameters, ``state_dict`` keys and result of ``nn.Conv2d(cin, cout, 1)``, computed as
    a matrix product (``F.linear``), which on CPU is faster than oneDNN's convolution at 1x1
    spatial size: GhostNet 1.0x training steps ran 1.04-1.10x faster with it over three runs of
    benchmarks/train_step.py on a shared 2-core VM (benchmarks/results/train_step*.json). Only
    for 1x1 inputs.
    """

    def __init__(self, cin: int, cout: int, *, bias: bool = True) -> None:
        super().__init__(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, cin, 1, 1) -> (N, cout, 1, 1)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
