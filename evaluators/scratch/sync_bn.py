"""BatchNorm over the global batch of data-parallel workers on any backend (gloo on CPU too).

PyTorch's ``nn.SyncBatchNorm`` runs on CUDA only. In training mode this module all-reduces each
channel's sum, sum of squares and count over the process group, normalises with the global
mean and (biased) variance, and in the backward pass all-reduces the two sums the input
gradient needs, so that N workers with B images each compute what one process computes on the
N·B images (the parameters' gradients are averaged by DistributedDataParallel as usual). Its
state (weight, bias, running statistics) is BatchNorm2d's, so checkpoints move freely between
it and the plain layer. In evaluation mode, or alone, it is BatchNorm2d.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["CrossWorkerBatchNorm2d", "convert_batchnorms"]


class _GlobalBatchNorm(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias with the group's mean and var."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float, group: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
        c = x.shape[1]
        stats = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)),
                           x.new_tensor([x.numel() / c])])
        dist.all_reduce(stats, group=group)
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0.0)
        invstd = torch.rsqrt(var + eps)
        xhat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
        ctx.save_for_backward(xhat, weight, invstd, count)
        ctx.group = group
        return xhat * weight[None, :, None, None] + bias[None, :, None, None], mean, var, count

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        xhat, weight, invstd, count = ctx.saved_tensors
        c = dy.shape[1]
        local = torch.cat([dy.sum((0, 2, 3)), (dy * xhat).sum((0, 2, 3))])
        sums = local.clone()
        dist.all_reduce(sums, group=ctx.group)
        mean_dy = (sums[:c] / count)[None, :, None, None]
        mean_dy_xhat = (sums[c:] / count)[None, :, None, None]
        dx = (dy - mean_dy - xhat * mean_dy_xhat) * (invstd * weight)[None, :, None, None]
        # this worker's share: DistributedDataParallel averages the parameters' gradients
        return dx, local[c:], local[:c], None, None


class CrossWorkerBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics span every worker of ``group`` (default: the
    whole process group)."""

    def __init__(self, *args: Any, group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() \
                or dist.get_world_size(self.group) == 1:
            return super().forward(x)
        if not (self.affine and self.track_running_stats):
            raise ValueError("CrossWorkerBatchNorm2d needs affine=True and running statistics")
        y, mean, var, count = _GlobalBatchNorm.apply(x, self.weight, self.bias, self.eps,
                                                     self.group)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None \
                else 1.0 / float(self.num_batches_tracked)
            unbiased = var * count / (count - 1).clamp_min(1.0)
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


def convert_batchnorms(module: nn.Module, group: Any = None) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced by a :class:`CrossWorkerBatchNorm2d`
    holding the same parameters and statistics (in place where possible; returns the root)."""
    if type(module) is nn.BatchNorm2d:
        new = CrossWorkerBatchNorm2d(module.num_features, eps=module.eps,
                                     momentum=module.momentum, affine=module.affine,
                                     track_running_stats=module.track_running_stats, group=group)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        tensors = list(module.state_dict().values())
        return new.to(tensors[0].device) if tensors else new
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorms(child, group))
    return module
