"""Images read from disk while training (evaluators/streaming.py) against the same folder held
in memory (evaluators/batches.py), and the random-resized crop both paths draw: real PNG and
JPEG files in class folders, written here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.batches import DeviceBatches, DeviceHeldOut
from evaluators.data import DataError, load_dataset, load_folder_files
from evaluators.data.images import decode_crop
from evaluators.streaming import FileReader, StreamBatches, StreamHeldOut
from evaluators.transforms import (
    CROP_RATIO,
    CROP_SCALE,
    crop_boxes,
    draw_crops,
    eval_side,
    eval_view,
    resize_images,
    resized_crop_batch,
)
from tests.helpers import write_image_folder

R = 16  # training resolution of these tests
S = eval_side(R)  # the side images are held at


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """36 PNG/JPEG files, square and 40x30, RGB and grayscale, in three class folders."""
    return write_image_folder(tmp_path_factory.mktemp("streaming") / "images")


def _sources(folder: Path, *, augment: bool, seed: int = 3, shard=(0, 1), batch: int = 8):
    files = load_folder_files(folder, side=S, seed=0)
    data = load_dataset("folder", data_dir=folder, image_size=S, fit="crop", seed=0)
    assert torch.equal(files.train_y, data.train_y)  # the same split, file for file
    memory = DeviceBatches(data.train_x, data.train_y, batch_size=batch,
                           generator=torch.Generator().manual_seed(seed), channels_last=False,
                           augment=augment, crop_padding=0.0, flip=True, crop="resized",
                           resolution=R, shard=shard)
    reader = FileReader(files.train_files, files.train_y, files.val_files, files.val_y,
                        resolution=R, side=S, workers=1, device=torch.device("cpu"),
                        channels_last=False)
    stream = StreamBatches(reader, batch_size=batch, augment=augment, flip=True, shard=shard,
                           generator=torch.Generator().manual_seed(seed))
    return data, memory, reader, stream


def test_without_augmentation_both_paths_give_identical_batches(folder):
    data, memory, reader, stream = _sources(folder, augment=False)
    for _ in range(2):  # two epochs: two permutations from the same generator
        pairs = list(zip(memory.epoch(), stream.epoch(), strict=True))
        assert len(pairs) == memory.steps == stream.steps == len(data.train_x) // 8
        for (xm, ym), (xs, ys) in pairs:
            assert xm.shape == (8, 3, R, R) and torch.equal(ym, ys)
            assert torch.equal(xm, xs)  # the same pixels: same decoder, same centre crop
        assert torch.equal(memory.order, stream.order)
    for a, b in zip(memory.calibration(20), stream.calibration(20), strict=True):
        assert torch.equal(a, b)
    held_memory = DeviceHeldOut(data.val_x, data.val_y, resolution=R, crop="resized",
                                batch_size=3, channels_last=False)
    held_stream = StreamHeldOut(reader, batch_size=3)
    assert held_memory.images == held_stream.images == len(data.val_x)
    for (xm, ym), (xs, ys) in zip(held_memory, held_stream, strict=True):
        assert torch.equal(xm, xs) and torch.equal(ym, ys)


def test_with_augmentation_both_paths_take_the_same_images_in_the_same_order(folder):
    _, memory, _, stream = _sources(folder, augment=True)
    for _ in range(2):
        batches = list(zip(memory.epoch(), stream.epoch(), strict=True))
        assert torch.equal(memory.order, stream.order)
        for (xm, ym), (xs, ys) in batches:
            assert torch.equal(ym, ys) and xm.shape == xs.shape == (8, 3, R, R)
            assert not torch.equal(xm, xs)  # crops of the stored square vs the original file


def test_workers_share_each_global_batch_between_them(folder):
    _, whole, _, _ = _sources(folder, augment=True)
    shares = [_sources(folder, augment=True, shard=(rank, 2))[1] for rank in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole.epoch(), shares[0].epoch(), shares[1].epoch(),
                                          strict=True):
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
        assert torch.allclose(x[0::2], x0) and torch.allclose(x[1::2], x1)  # same crops too


def test_a_file_that_fails_to_decode_stops_the_epoch_with_one_line(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=4)
    broken = root / "cat" / "000.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) // 2])  # the header reads, the pixels do not
    files = load_folder_files(root, side=S)
    files.check_headers()  # a header check passes it
    reader = FileReader(files.train_files, files.train_y, files.val_files, files.val_y,
                        resolution=R, side=S, workers=1, device=torch.device("cpu"),
                        channels_last=False)
    batches = StreamBatches(reader, batch_size=len(files.train_files), augment=False,
                            flip=False, generator=torch.Generator().manual_seed(0))
    held = StreamHeldOut(reader, batch_size=4)
    with pytest.raises(DataError) as info:
        list(batches.epoch()) + list(held)
    assert str(info.value).startswith(f"folder: cannot read image {broken}")
    assert "\n" not in str(info.value)
    (root / "dog" / "001.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image .*001.png"):
        load_folder_files(root, side=S).check_headers()


# ---------------------------------------------------------------------------------------------
# The random-resized crop


def test_crop_boxes_keep_the_drawn_share_and_ratio_inside_the_image():
    params = draw_crops(4000, generator=torch.Generator().manual_seed(0),
                        device=torch.device("cpu"))
    for w, h in ((224.0, 224.0), (500.0, 375.0), (30.0, 90.0)):
        box = crop_boxes(params, w, h)
        left, top, bw, bh = box.unbind(1)
        assert (left >= 0).all() and (top >= 0).all()
        assert (left + bw <= w + 1e-3).all() and (top + bh <= h + 1e-3).all()
        whole = (bw < w - 1e-3) & (bh < h - 1e-3)  # boxes not cut to the image's side
        share = (bw * bh / (w * h))[whole]
        ratio = (bw / bh)[whole]
        assert share.min() >= CROP_SCALE[0] - 1e-4 and share.max() <= CROP_SCALE[1] + 1e-4
        assert ratio.min() >= CROP_RATIO[0] - 1e-4 and ratio.max() <= CROP_RATIO[1] + 1e-4
        if w / h < 2 and h / w < 2:  # photos' usual shapes: most boxes fit as drawn
            assert whole.float().mean() > 0.7
    flips = params[:, 4] >= 0.5
    assert 0.45 < flips.float().mean() < 0.55


def test_the_device_crop_and_the_file_crop_cut_the_same_box(tmp_path):
    """On an image held at its own size, the batched crop (grid_sample) and PIL's crop of the
    file agree up to interpolation: same box, same mirroring."""
    yy, xx = np.mgrid[0:48, 0:64]
    pixels = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    path = tmp_path / "gradient.png"
    Image.fromarray(pixels).save(path)
    x = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]  # (1, 3, 48, 64)
    params = draw_crops(6, generator=torch.Generator().manual_seed(1), device=torch.device("cpu"))
    params[:3, 4], params[3:, 4] = 0.0, 1.0  # three plain, three mirrored
    for p in params:
        device = resized_crop_batch(x, p[None], R)[0]  # (3, R, R) float
        file = torch.tensor(decode_crop(str(path), p.numpy(), R), dtype=torch.float32)
        assert (device - file).abs().mean() < 6.0, p  # of 0..255, on smooth gradients
    whole = torch.tensor([[1.0, math.log(64 / 48), 0.0, 0.0, 0.0]])  # the full image
    assert (resized_crop_batch(x, whole, R) - resize_images(x, R).float()).abs().mean() < 4.0


def test_the_evaluation_view_is_resize_then_centre_crop():
    x = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(1, 3, 32, 32) % 251
    x = x.to(torch.uint8)
    view = eval_view(x, resolution=28, crop="resized")
    assert eval_side(28) == 32 and eval_side(224) == 256
    assert torch.equal(view, x[..., 2:30, 2:30])  # already at 32: the centre 28 x 28
    assert torch.equal(eval_view(x, resolution=32, crop="pad"), x)
