"""Where training batches come from: the :class:`BatchSource` interface and images on the device.

The training loop (evaluators/training.py) asks a source for one epoch of model-ready batches
and, before each evaluation, for a few training images to recompute the BatchNorm statistics.
:class:`DeviceBatches` serves both from uint8 images held on the device: a seeded permutation
per epoch, gathers, and augmentation as whole-batch tensor ops, so the hot loop never waits for
the host. :class:`~evaluators.streaming.StreamBatches` is the same interface over image files
read by DataLoader workers, for data sets too large to hold.

Data-parallel training splits each step's global batch across the workers (``shard``): every
worker draws the same permutation and the same augmentation, and keeps every ``world``-th image
of the global batch from its ``rank`` on, as PyTorch's DistributedSampler does with a shared
permutation. Together the workers see each step exactly the global batch a single worker sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from evaluators.transforms import (
    Normalizer,
    augment_batch,
    draw_crops,
    eval_view,
    resize_images,
    resized_crop_batch,
)

__all__ = ["BatchSource", "DeviceBatches", "DeviceHeldOut", "HeldOut", "images_on_device"]


class BatchSource(Protocol):
    """One epoch of training batches at a time, and images for BatchNorm recalibration."""

    batch_size: int  # images per step, all workers together
    steps: int  # batches per epoch

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The next epoch: ``steps`` pairs of (B, 3, R, R) float32 model inputs and (B,) int64
        labels, on the model's device (B: this worker's share of the batch)."""
        ...

    def calibration(self, n: int) -> Iterator[torch.Tensor]:
        """Model inputs (no augmentation) of ``n`` training images in batches of at least two
        (BatchNorm needs two), drawn the way the last epoch drew them."""
        ...


class HeldOut(Protocol):
    """The held-out images as evaluated: model inputs and labels, this worker's share."""

    images: int  # all workers together

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ...


def images_on_device(x: torch.Tensor, y: torch.Tensor, *, device: torch.device,
                     resolution: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) and labels (N,) on ``device``, the images resized once to
    (N, 3, resolution, resolution) (None: kept as they are)."""
    x = x.to(device)
    return (x if resolution is None else resize_images(x, resolution)), y.to(device)


class DeviceBatches:
    """Batches gathered from uint8 images already on the device (see :func:`images_on_device`).

    Each epoch is a permutation drawn from ``generator``; the ragged last batch is dropped, so
    BatchNorm always sees full batches and every step costs the same. Augmentation draws from
    the same generator, so a seed fixes the batch order and the augmentation together:

    - ``crop="pad"``: the images are at the training resolution; random crop with zero padding
      of ``crop_padding`` times the side, then horizontal flip, drawn per batch;
    - ``crop="resized"``: the images are stored at any side; a random-resized crop to
      ``resolution`` with a flip (:func:`~evaluators.transforms.draw_crops`), drawn for the
      whole epoch right after its permutation. Without augmentation, the evaluation view.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 generator: torch.Generator, channels_last: bool, augment: bool,
                 crop_padding: float, flip: bool, crop: str = "pad",
                 resolution: int | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        if len(x) < batch_size or batch_size < 2:
            raise ValueError(f"batch_size: got {batch_size} for {len(x)} images; expected 2 to "
                             "the number of images")
        rank, world = shard
        if batch_size % world or not 0 <= rank < world:
            raise ValueError(f"shard: got rank {rank} of {world} for a batch of {batch_size}; "
                             "the batch must split evenly")
        self.x, self.y = x, y  # (N, 3, S, S) uint8, (N,) int64
        self.batch_size = batch_size
        self.steps = len(x) // batch_size
        self.generator = generator
        self.channels_last = channels_last
        self.crop, self.augment = crop, augment
        self.resolution = resolution if resolution is not None else x.shape[-1]
        self.padding = round(crop_padding * x.shape[-1]) if augment and crop == "pad" else 0
        self.flip = flip and augment
        self.rank, self.world = rank, world
        self.norm = Normalizer(x.device)
        self.order = torch.arange(len(x), device=x.device)  # the last epoch's permutation

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # drawn here, not on the first next(): the permutation comes before any augmentation
        self.order = torch.randperm(len(self.x), device=self.x.device, generator=self.generator)
        crops = None
        if self.crop == "resized" and self.augment:
            crops = draw_crops(self.steps * self.batch_size, generator=self.generator,
                               device=self.x.device)  # (steps * B, 5)
            if not self.flip:
                crops[:, 4] = 0.0
        return self._batches(self.order, crops)

    def _batches(self, order: torch.Tensor, crops: torch.Tensor | None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b, mine = self.batch_size, slice(self.rank, None, self.world)
        for i in range(self.steps):
            idx = order[i * b:(i + 1) * b]
            if crops is not None:
                xb = resized_crop_batch(self.x[idx[mine]], crops[i * b:(i + 1) * b][mine],
                                        self.resolution)  # (B/world, 3, R, R) float
            elif self.padding or self.flip:  # drawn for the global batch, then this share
                xb = augment_batch(self.x[idx], padding=self.padding, flip=self.flip,
                                   generator=self.generator)[mine]
            else:
                xb = self._view(self.x[idx[mine]])
            yield self.norm(xb, channels_last=self.channels_last), self.y[idx[mine]]

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.crop == "pad" else eval_view(x, resolution=self.resolution, crop="resized")

    def calibration(self, n: int) -> Iterator[torch.Tensor]:
        x = self.x[self.order[:n]]  # (n, 3, S, S) uint8: the first images of the last epoch
        for i in range(0, len(x) - 1, self.batch_size):
            xb = x[i:i + self.batch_size]
            if len(xb) > 1:
                yield self.norm(self._view(xb), channels_last=self.channels_last)


class DeviceHeldOut:
    """Held-out uint8 images (N, 3, H, W) on the device, served in the evaluation view
    (:func:`~evaluators.transforms.eval_view`) in batches of ``batch_size``; a worker of a
    data-parallel run takes every ``world``-th image from its ``rank`` on."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, resolution: int, crop: str,
                 batch_size: int, channels_last: bool, shard: tuple[int, int] = (0, 1)) -> None:
        rank, world = shard
        self.x, self.y = x[rank::world], y[rank::world]
        self.images = len(x)
        self.resolution, self.crop = resolution, crop
        self.batch_size, self.channels_last = batch_size, channels_last
        self.norm = Normalizer(x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.x), self.batch_size):
            xb = eval_view(self.x[i:i + self.batch_size], resolution=self.resolution,
                           crop=self.crop)
            yield self.norm(xb, channels_last=self.channels_last), self.y[i:i + self.batch_size]
