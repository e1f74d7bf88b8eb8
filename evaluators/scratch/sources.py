"""Where a from-scratch training's images come from: held on the device
(:class:`~evaluators.batches.DeviceBatches`) for a data set in memory, or read from the files
while training (:class:`~evaluators.streaming.StreamBatches`) for a folder given as
:class:`~evaluators.data.FolderFiles`."""

from __future__ import annotations

import torch

from evaluators.batches import BatchSource, DeviceBatches, DeviceHeldOut, HeldOut, images_on_device
from evaluators.data import FolderFiles, ImageData
from evaluators.device import loader_workers
from evaluators.scratch.config import TrainConfig
from evaluators.streaming import FileReader, StreamBatches, StreamHeldOut

__all__ = ["training_sources"]


def training_sources(data: ImageData | FolderFiles, config: TrainConfig, *,
                     device: torch.device, generator: torch.Generator,
                     shard: tuple[int, int] = (0, 1), trainers: int = 1
                     ) -> tuple[BatchSource, HeldOut]:
    """The training batches and the held-out images of ``data`` for a resolved ``config``;
    ``shard``: (rank, workers) of a data-parallel run; ``trainers``: training processes on this
    machine (they share its CPUs for decoding)."""
    _, eval_x, eval_y = data.held_out()
    r = config.resolution
    if isinstance(data, FolderFiles):
        reader = FileReader(data.train_files, data.train_y, eval_x, eval_y, resolution=r,
                            side=data.side, workers=loader_workers(trainers=trainers),
                            device=device, channels_last=config.channels_last)
        return (StreamBatches(reader, batch_size=config.batch_size, generator=generator,
                              augment=config.augment, flip=config.flip, shard=shard),
                StreamHeldOut(reader, batch_size=config.eval_batch_size, shard=shard))
    # "pad": resized once to the resolution; "resized": kept as stored, cropped per batch
    stored = r if config.crop == "pad" else None
    x, y = images_on_device(data.train_x, data.train_y, device=device, resolution=stored)
    ex, ey = images_on_device(eval_x, eval_y, device=device, resolution=stored)
    batches = DeviceBatches(x, y, batch_size=config.batch_size, generator=generator,
                            channels_last=config.channels_last, augment=config.augment,
                            crop_padding=config.crop_padding, flip=config.flip,
                            crop=config.crop, resolution=r, shard=shard)
    held_out = DeviceHeldOut(ex, ey, resolution=r, crop=config.crop,
                             batch_size=config.eval_batch_size,
                             channels_last=config.channels_last, shard=shard)
    return batches, held_out
