"""Training batches read from image files while training: :class:`StreamBatches`, the
:class:`~evaluators.batches.BatchSource` for folders too large to hold in memory, and
:class:`StreamHeldOut` for their held-out split.

DataLoader worker processes decode each batch's files with PIL
(evaluators/data/images.py), so memory holds a few batches, not the data set. The batch order
and the augmentation are drawn in the training process from the same generator and in the same
order as :class:`~evaluators.batches.DeviceBatches` draws them: under a seed both sources take
the same images in the same order, and with augmentation off (and for evaluation) the same
pixels, given images stored as the in-memory path stores them. A random-resized crop here cuts
the original file, the in-memory path the stored square, from the same draws.

A file that cannot be decoded ends the epoch with a one-line
:class:`~evaluators.data.DataError` naming it (worker exceptions would otherwise arrive as a
traceback from another process).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evaluators.data import DataError
from evaluators.data.images import decode_crop, decode_square
from evaluators.transforms import Normalizer, centre_crop, draw_crops

__all__ = ["FileReader", "StreamBatches", "StreamHeldOut"]

_PREFETCH = 4  # batches each loader process decodes ahead


class _Files(Dataset):
    """Item = one batch: (file positions, crop draws or None) -> (uint8 (B, 3, R, R), (B,)
    labels), or the one-line error of the first file that fails. The paths are one bytes blob
    and an offset array: a tuple of a million strings would be copied, page by page, into every
    forked worker as their reference counts change."""

    def __init__(self, files: Sequence[str], labels: np.ndarray, *, resolution: int,
                 side: int) -> None:
        encoded = [f.encode() for f in files]
        self.blob = b"".join(encoded)
        self.offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self.labels = labels
        self.resolution, self.side = resolution, side

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode()

    def __getitem__(self, spec: tuple[np.ndarray, np.ndarray | None]
                    ) -> tuple[torch.Tensor, torch.Tensor] | str:
        positions, crops = spec
        r = self.resolution
        out = np.empty((len(positions), 3, r, r), np.uint8)
        try:
            for j, i in enumerate(positions):
                if crops is None:  # the evaluation view: centre square at side, centre R
                    out[j] = centre_crop(decode_square(self.path(i), self.side, fit="crop"), r)
                else:
                    out[j] = decode_crop(self.path(i), crops[j], r)
        except DataError as exc:
            return str(exc)
        return torch.from_numpy(out), torch.from_numpy(self.labels[positions])


class _Plan:
    """The DataLoader's sampler: the batches of whatever is read next (an epoch, calibration
    images, the held-out split), set before each pass; the loader's processes persist."""

    def __init__(self) -> None:
        self.specs: list[tuple[np.ndarray, np.ndarray | None]] = []

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


class FileReader:
    """The files of the training and held-out splits, and the DataLoader processes that decode
    them: one set of ``workers`` processes for training, calibration and evaluation."""

    def __init__(self, train: Sequence[str], train_y: torch.Tensor, held_out: Sequence[str],
                 held_out_y: torch.Tensor, *, resolution: int, side: int, workers: int,
                 device: torch.device, channels_last: bool) -> None:
        labels = torch.cat([train_y, held_out_y]).numpy()
        self.files = _Files([*train, *held_out], labels, resolution=resolution, side=side)
        self.train_images, self.held_out_images = len(train), len(held_out)
        self.plan = _Plan()
        self.loader = DataLoader(self.files, batch_size=None, sampler=self.plan,
                                 num_workers=workers, pin_memory=device.type == "cuda",
                                 persistent_workers=workers > 0,
                                 prefetch_factor=_PREFETCH if workers > 0 else None)
        self.device, self.channels_last = device, channels_last
        self.norm = Normalizer(device)

    def read(self, specs: list[tuple[np.ndarray, np.ndarray | None]]
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Model inputs and labels on the device for each (positions, crops) of ``specs``."""
        self.plan.specs = specs
        for item in self.loader:
            if isinstance(item, str):
                raise DataError(item)
            x, y = item
            x = x.to(self.device, non_blocking=True)
            yield (self.norm(x, channels_last=self.channels_last),
                   y.to(self.device, non_blocking=True))


class StreamBatches:
    """:class:`~evaluators.batches.BatchSource` over the training files of a
    :class:`FileReader`: the permutation and the random-resized crops (with flips) drawn from
    ``generator`` as :class:`~evaluators.batches.DeviceBatches` draws them with
    ``crop="resized"``; a data-parallel worker reads its share of each global batch."""

    def __init__(self, reader: FileReader, *, batch_size: int, generator: torch.Generator,
                 augment: bool, flip: bool, shard: tuple[int, int] = (0, 1)) -> None:
        n = reader.train_images
        if n < batch_size or batch_size < 2:
            raise ValueError(f"batch_size: got {batch_size} for {n} images; expected 2 to the "
                             "number of images")
        self.reader, self.generator = reader, generator
        self.batch_size, self.steps = batch_size, n // batch_size
        self.augment, self.flip = augment, flip and augment
        self.rank, self.world = shard
        self.order = torch.arange(n)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.generator.device
        self.order = torch.randperm(self.reader.train_images, device=device,
                                    generator=self.generator)
        crops = None
        if self.augment:
            crops = draw_crops(self.steps * self.batch_size, generator=self.generator,
                               device=device)  # (steps * B, 5)
            if not self.flip:
                crops[:, 4] = 0.0
            crops = crops.cpu().numpy()
        order, b, mine = self.order.cpu().numpy(), self.batch_size, slice(self.rank, None,
                                                                        self.world)
        specs = [(order[i * b:(i + 1) * b][mine],
                  None if crops is None else crops[i * b:(i + 1) * b][mine])
                 for i in range(self.steps)]
        return self.reader.read(specs)

    def calibration(self, n: int) -> Iterator[torch.Tensor]:
        idx = self.order[:n].cpu().numpy()
        specs = [(idx[i:i + self.batch_size], None) for i in range(0, len(idx) - 1,
                                                                   self.batch_size)]
        for x, _ in self.reader.read([s for s in specs if len(s[0]) > 1]):
            yield x


class StreamHeldOut:
    """The held-out files of a :class:`FileReader` in the evaluation view, in batches of
    ``batch_size``; a data-parallel worker takes every ``world``-th image from its ``rank``."""

    def __init__(self, reader: FileReader, *, batch_size: int,
                 shard: tuple[int, int] = (0, 1)) -> None:
        rank, world = shard
        self.reader = reader
        self.images = reader.held_out_images
        mine = np.arange(reader.train_images, reader.train_images + self.images)[rank::world]
        self.specs = [(mine[i:i + batch_size], None) for i in range(0, len(mine), batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.reader.read(self.specs)
