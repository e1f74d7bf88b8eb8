"""Where training batches come from: the :class:`BatchSource` interface and images on the device.

The training loop (evaluators/training.py) asks a source for one epoch of model-ready batches
and, before each evaluation, for a few training images to recompute the BatchNorm statistics.
:class:`DeviceBatches` serves both from uint8 images held on the device: a seeded permutation
per epoch, gathers, and augmentation as whole-batch tensor ops, so the hot loop never waits for
the host. A streaming loader is another implementation of the same interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from evaluators.transforms import Normalizer, augment_batch, resize_images

__all__ = ["BatchSource", "DeviceBatches", "images_on_device"]


class BatchSource(Protocol):
    """One epoch of training batches at a time, and images for BatchNorm recalibration."""

    batch_size: int  # images per batch
    steps: int  # batches per epoch

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The next epoch: ``steps`` pairs of (B, 3, R, R) float32 model inputs and (B,) int64
        labels, on the model's device."""
        ...

    def calibration(self, n: int) -> Iterator[torch.Tensor]:
        """Model inputs (no augmentation) of ``n`` training images in batches of at least two
        (BatchNorm needs two), drawn the way the last epoch drew them."""
        ...


def images_on_device(x: torch.Tensor, y: torch.Tensor, *, device: torch.device,
                     resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) and labels (N,) on ``device``, the images resized once to
    (N, 3, resolution, resolution)."""
    return resize_images(x.to(device), resolution), y.to(device)


class DeviceBatches:
    """Batches gathered from uint8 images already on the device (see :func:`images_on_device`).

    Each epoch is a permutation drawn from ``generator``; the ragged last batch is dropped, so
    BatchNorm always sees full batches and every step costs the same. Augmentation (random crop
    with zero padding of ``crop_padding`` times the side, horizontal flip) draws from the same
    generator, so a seed fixes the batch order and the augmentation together.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 generator: torch.Generator, channels_last: bool, augment: bool,
                 crop_padding: float, flip: bool) -> None:
        if len(x) < batch_size or batch_size < 2:
            raise ValueError(f"batch_size: got {batch_size} for {len(x)} images; expected 2 to "
                             "the number of images")
        self.x, self.y = x, y  # (N, 3, R, R) uint8, (N,) int64
        self.batch_size = batch_size
        self.steps = len(x) // batch_size
        self.generator = generator
        self.channels_last = channels_last
        self.padding = round(crop_padding * x.shape[-1]) if augment else 0
        self.flip = flip and augment
        self.norm = Normalizer(x.device)
        self.order = torch.arange(len(x), device=x.device)  # the last epoch's permutation

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # drawn here, not on the first next(): the permutation comes before any augmentation
        self.order = torch.randperm(len(self.x), device=self.x.device, generator=self.generator)
        return self._batches(self.order)

    def _batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch_size
        for i in range(self.steps):
            idx = order[i * b:(i + 1) * b]
            xb = self.x[idx]  # (B, 3, R, R) uint8
            if self.padding or self.flip:
                xb = augment_batch(xb, padding=self.padding, flip=self.flip,
                                   generator=self.generator)
            yield self.norm(xb, channels_last=self.channels_last), self.y[idx]

    def calibration(self, n: int) -> Iterator[torch.Tensor]:
        x = self.x[self.order[:n]]  # (n, 3, R, R) uint8: the first images of the last epoch
        for i in range(0, len(x) - 1, self.batch_size):
            xb = x[i:i + self.batch_size]
            if len(xb) > 1:
                yield self.norm(xb, channels_last=self.channels_last)
