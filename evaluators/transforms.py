"""Image tensors on the device: resizing, augmentation and normalisation of whole batches.

Images stay uint8 ``(N, 3, H, W)`` until a batch is fed to the network, so a data set fits on
the device; every operation here works on a whole batch at once, with no per-image Python.
Normalisation uses fixed ImageNet statistics: a trained model then needs no per-data-set numbers
to be evaluated elsewhere, and the BatchNorm after the stem absorbs the difference to a data
set's own statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalizer", "augment_batch", "normalize",
           "resize_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
