"""Image tensors on the device: resizing, augmentation and normalisation of whole batches.

Images stay uint8 ``(N, 3, H, W)`` until a batch is fed to the network, so a data set fits on
the device; every operation here works on a whole batch at once, with no per-image Python.
Normalisation uses fixed ImageNet statistics: a trained model then needs no per-data-set numbers
to be evaluated elsewhere, and the BatchNorm after the stem absorbs the difference to a data
set's own statistics.

Two preprocessing modes (``crop``): ``"pad"`` (the small-data recipe: training images at the
resolution, random crop with zero padding; evaluation resizes) and ``"resized"`` (the ImageNet
convention: a random-resized crop of the stored image, scale 0.08-1 and aspect ratio 3/4-4/3, for
training; resize to R / 0.875 and a centre crop of R for evaluation). A random-resized crop is
drawn as five numbers per image (:func:`draw_crops`) that do not depend on the image's size, and
turned into a box for an image of any size by :func:`crop_boxes`: the in-memory path crops the
stored square on the device, the streaming path the original photo with PIL, from the same draws.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["CROP_MODES", "CROP_SCALE", "CROP_RATIO", "EVAL_CROP", "IMAGENET_MEAN",
           "IMAGENET_STD", "Normalizer", "augment_batch", "centre_crop", "crop_boxes",
           "draw_crops", "eval_side", "eval_view", "normalize", "resize_images",
           "resized_crop_batch"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_MODES = ("pad", "resized")
CROP_SCALE = (0.08, 1.0)  # share of the image's area a random-resized crop keeps
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio (width / height), drawn log-uniformly
EVAL_CROP = 0.875  # evaluation: the centre R x R of the image resized to R / EVAL_CROP


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


# ---------------------------------------------------------------------------------------------
# Random-resized and centre crops ("resized" mode)


def eval_side(resolution: int) -> int:
    """The side an image is resized to before the centre crop of ``resolution`` (256 for 224)."""
    return int(round(resolution / EVAL_CROP))


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` of (N, C, H, W) images (offsets rounded down)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def eval_view(x: torch.Tensor, *, resolution: int, crop: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, R, R) as evaluated: resized to R ("pad"), or resized
    to :func:`eval_side` then centre-cropped to R ("resized")."""
    if crop == "pad":
        return resize_images(x, resolution)
    return centre_crop(resize_images(x, eval_side(resolution)), resolution)


def draw_crops(n: int, *, generator: torch.Generator | None, device: torch.device
               ) -> torch.Tensor:
    """(n, 5) float32 on ``device``: per image the area share, the log aspect ratio, the
    crop's horizontal and vertical place (0..1 of the free room) and a flip flag (>= 0.5)."""
    u = torch.rand(n, 5, device=device, generator=generator)
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    scale = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, 0]
    return torch.stack([scale, lo + (hi - lo) * u[:, 1], u[:, 2], u[:, 3], u[:, 4]], dim=1)


def crop_boxes(params: torch.Tensor, width: float | torch.Tensor,
               height: float | torch.Tensor) -> torch.Tensor:
    """(n, 5) draws of :func:`draw_crops` -> (n, 4) boxes (left, top, width, height) in pixels
    of images ``width`` x ``height`` (numbers, or (n,) tensors). The box keeps the drawn share
    of the area at the drawn aspect ratio; a side that would not fit is cut to the image's
    (instead of drawing again), which keeps one draw per image on both data paths."""
    area = params[:, 0] * width * height
    ratio = params[:, 1].exp()
    w = torch.minimum(torch.sqrt(area * ratio), torch.as_tensor(width, dtype=params.dtype))
    h = torch.minimum(torch.sqrt(area / ratio), torch.as_tensor(height, dtype=params.dtype))
    return torch.stack([params[:, 2] * (width - w), params[:, 3] * (height - h), w, h], dim=1)


def resized_crop_batch(x: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Random-resized crops of (N, C, H, W) images (any dtype) by the (N, 5) draws of
    :func:`draw_crops`, bilinear, mirrored where the flip flag is set -> (N, C, size, size)
    float32 in the input's value range, as one ``grid_sample`` over the batch."""
    n, _, h, w = x.shape
    box = crop_boxes(params.float(), float(w), float(h))  # (N, 4) pixels
    # The affine map from output coordinates (-1..1) to input coordinates (-1..1): the box's
    # centre and half-size in the input's normalised frame; a negative x scale mirrors.
    sx, sy = box[:, 2] / w, box[:, 3] / h
    cx, cy = (2 * box[:, 0] + box[:, 2]) / w - 1, (2 * box[:, 1] + box[:, 3]) / h - 1
    sx = torch.where(params[:, 4] >= 0.5, -sx, sx)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)  # (N, C, size, size)
