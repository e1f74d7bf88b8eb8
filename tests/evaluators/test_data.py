"""Data sets: the embedded digits, CIFAR files and image folders written here in their real
formats, the held-out split, the folder cache, one-line errors and the restricted unpickler."""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.data import DATASETS, DataError, ImageData, load_dataset
from evaluators.data.splits import stratified_subset
from tests.helpers import py2_pickle, write_cifar10, write_cifar100, write_image_folder

# ---------------------------------------------------------------------------------------------
# Writers of the real formats (also used by test_proxy.py)


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB (H, W, 3) or RGBA (H, W, 4) PNG, written by hand: PIL writes 16 bits only
    for grayscale."""
    h, w, c = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))  # filter 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in x.reshape(len(x), -1).numpy()}


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    assert isinstance(excinfo.value, ValueError)  # UserError: the CLI prints it, exit 2
    return message


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_embedded_shapes_and_split():
    data = load_dataset("digits")
    assert isinstance(data, ImageData) and data.name == "digits"
    assert data.num_classes == 10 and data.classes == tuple("0123456789")
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape[1:] == (3, 8, 8)
    assert data.train_y.dtype == torch.int64
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # grayscale repeated
    assert len(data.train_x) + len(data.val_x) == 1797
    assert len(data.val_x) == pytest.approx(450, abs=10)  # digits holds out a quarter
    assert data.test_x is None and data.test_y is None
    assert int(data.train_x.max()) == 255
    # stratified: every class in the validation split, in proportion
    counts = torch.bincount(data.val_y, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47
    assert "1347 train / 450 val" in data.describe()


def test_validation_never_overlaps_training_and_is_fixed_by_seed():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    train, val = _rows(a.train_x), _rows(a.val_x)
    assert not train & val  # digits' 1,797 images are all distinct, so content identifies them
    assert len(train | val) == 1797
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert _rows(c.val_x) != val
    # the validation images do not depend on how much training data is kept
    d = load_dataset("digits", seed=0, max_train=100)
    assert torch.equal(d.val_x, a.val_x)
    assert _rows(d.train_x) <= train


def test_max_train_and_max_val_are_stratified_seeded_subsets():
    data = load_dataset("digits", max_train=200, max_val=50, seed=3)
    assert len(data.train_x) == 200 and len(data.val_x) == 50
    train_counts = torch.bincount(data.train_y, minlength=10)
    val_counts = torch.bincount(data.val_y, minlength=10)
    assert train_counts.min() >= 19 and train_counts.max() <= 21  # each class keeps its share
    assert val_counts.min() >= 4 and val_counts.max() <= 6
    again = load_dataset("digits", max_train=200, max_val=50, seed=3)
    assert torch.equal(data.train_x, again.train_x)
    assert not _rows(data.train_x) & _rows(data.val_x)
    smallest = load_dataset("digits", max_train=10, max_val=10)  # one image of each class
    assert torch.equal(torch.bincount(smallest.train_y), torch.ones(10, dtype=torch.int64))
    for kwargs in ({"max_train": 9}, {"max_val": 5}):
        with pytest.raises(DataError, match=f"digits: {next(iter(kwargs))} .* is fewer than its "
                                            "10 classes; pass at least 10"):
            load_dataset("digits", **kwargs)


@pytest.mark.parametrize("n", [5, 8, 13])
def test_a_stratified_subset_of_unbalanced_classes_keeps_every_class(n):
    y = np.repeat(np.arange(5), [500, 20, 20, 20, 20])
    idx = np.arange(len(y))
    chosen = stratified_subset(y, idx, n, seed=0, salt=1)
    counts = np.bincount(y[chosen], minlength=5)
    assert len(chosen) == n and counts.min() >= 1 and len(set(chosen)) == n
    assert counts[0] == counts.max()  # the big class still takes most of the share


def test_image_size_resizes_and_arguments_are_checked():
    data = load_dataset("digits", image_size=16, max_train=20)
    assert data.train_x.shape[1:] == (3, 16, 16) and data.val_x.shape[1:] == (3, 16, 16)
    for kwargs in ({"val_fraction": 0.0}, {"val_fraction": 1.0}, {"max_train": 0},
                   {"image_size": -1}, {"seed": "1"}):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=name):
            load_dataset("digits", **kwargs)


def test_unknown_dataset_lists_the_names():
    with pytest.raises(DataError) as excinfo:
        load_dataset("imagenet")
    message = _one_line_error(excinfo)
    assert "imagenet" in message and all(n in message for n in DATASETS)


# ---------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("py2", [True, False], ids=["python2-original", "protocol5-resaved"])
def test_cifar10_reads_the_real_format(tmp_path, py2):
    write_cifar10(tmp_path, py2=py2)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.classes[0] == "airplane" and data.num_classes == 10
    assert len(data.train_x) + len(data.val_x) == 100 and len(data.val_x) == 10
    assert data.test_x.shape == (20, 3, 32, 32) and data.test_y.shape == (20,)
    # pixels: rows of the file are the R, G, B planes of 32x32
    batch = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes(),
                         encoding="bytes")
    expected = torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32))
    assert torch.equal(data.test_x, expected)
    assert data.test_y.tolist() == batch[b"labels"]
    assert not _rows(data.train_x) & _rows(data.val_x)
    # DIR may also be the batches folder itself
    direct = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py")
    assert torch.equal(direct.val_x, data.val_x)


def test_validation_images_can_join_training_when_a_test_split_scores(tmp_path):
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", data_dir=tmp_path)
    merged = data.with_val_in_train()
    assert len(merged.train_x) == 100 and len(merged.train_y) == 100
    assert _rows(merged.train_x) == _rows(data.train_x) | _rows(data.val_x)
    assert sorted(merged.train_y.tolist()) == sorted(data.train_y.tolist() + data.val_y.tolist())
    assert torch.equal(merged.test_x, data.test_x) and torch.equal(merged.val_x, data.val_x)
    with pytest.raises(DataError, match="digits: no official test split"):
        load_dataset("digits").with_val_in_train()


def test_cifar100_reads_fine_labels_and_meta(tmp_path):
    write_cifar100(tmp_path)
    data = load_dataset("cifar100", data_dir=tmp_path, image_size=16)
    assert data.num_classes == 100 and data.classes[7] == "fine7"
    assert data.train_x.shape[1:] == (3, 16, 16) and data.test_x.shape == (100, 3, 16, 16)
    assert len(data.train_x) + len(data.val_x) == 300
    assert set(data.train_y.tolist()) == set(range(100))


def test_cifar_missing_folder_and_files_give_one_line_errors(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10")
    assert "cifar-10-python.tar.gz" in _one_line_error(excinfo)

    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path / "nope")
    message = _one_line_error(excinfo)
    assert "does not exist" in message and "https://www.cs.toronto.edu/~kriz/cifar.html" in message

    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    message = _one_line_error(excinfo)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html" \
        in message and f"extract it into {tmp_path}" in message

    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar100", data_dir=tmp_path)
    assert "cifar-100-python" in _one_line_error(excinfo)

    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=archive)
    assert "is an archive; extract it first" in _one_line_error(excinfo)

    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "data_batch_3" in _one_line_error(excinfo)


def test_cifar_truncated_and_malformed_files(tmp_path):
    folder = write_cifar10(tmp_path)
    good = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(good[:len(good) // 2])
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    message = _one_line_error(excinfo)
    assert "data_batch_2" in message and "truncated" in message

    (folder / "data_batch_2").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "data_batch_2" in _one_line_error(excinfo)

    bad = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "data_batch_2").write_bytes(py2_pickle(bad))
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "(N, 3072)" in _one_line_error(excinfo)

    bad = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}
    (folder / "data_batch_2").write_bytes(py2_pickle(bad))
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "4 images but 3 labels" in _one_line_error(excinfo)

    (folder / "data_batch_2").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "expected the dict" in _one_line_error(excinfo)


class _Exploit:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _ImportExploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # builtins.exec of Python source
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("exploit", [_Exploit, _ImportExploit])
@pytest.mark.parametrize("target", ["data_batch_4", "batches.meta"])
def test_malicious_cifar_pickle_is_refused_and_nothing_runs(tmp_path, exploit, target):
    folder = write_cifar10(tmp_path / "data")
    marker = tmp_path / "pwned"
    payload = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1],
               b"filenames": exploit(marker)}
    (folder / target).write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path / "data")
    assert not marker.exists()
    message = _one_line_error(excinfo)
    assert target in message and "refused" in message
    assert ("system" in message) or ("exec" in message)


def test_the_crafted_exploit_really_executes_when_unpickled_unsafely(tmp_path):
    """Guards the test above: its payload is live, so 'no marker' means it was refused."""
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Exploit(marker), protocol=2))  # noqa: S301 - the point of the test
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# Image folders


def test_folder_of_png_and_jpeg_resizes_and_repeats_gray(tmp_path):
    write_image_folder(tmp_path / "imgs")
    data = load_dataset("folder", data_dir=tmp_path / "imgs", val_fraction=0.25)
    assert data.classes == ("cat", "dog", "fish") and data.num_classes == 3
    assert data.train_x.shape[1:] == (3, 32, 32)
    assert len(data.train_x) == 27 and len(data.val_x) == 9 and data.test_x is None
    assert torch.bincount(data.val_y).tolist() == [3, 3, 3]
    assert not _rows(data.train_x) & _rows(data.val_x)
    gray = torch.stack([x for x in torch.cat([data.train_x, data.val_x])
                        if torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])])
    assert len(gray) == 9  # the grayscale PNGs (j % 4 == 1), 3 per class
    small = load_dataset("folder", data_dir=tmp_path / "imgs", image_size=12)
    assert small.train_x.shape[1:] == (3, 12, 12)


def test_folder_with_train_and_test_subfolders_uses_the_official_split(tmp_path):
    write_image_folder(tmp_path / "ds" / "train", per_class=10)
    write_image_folder(tmp_path / "ds" / "test", per_class=4, seed=5)
    data = load_dataset("folder", data_dir=tmp_path / "ds")
    assert len(data.test_x) == 12 and torch.bincount(data.test_y).tolist() == [4, 4, 4]
    assert len(data.train_x) + len(data.val_x) == 30
    assert not _rows(data.test_x) & (_rows(data.train_x) | _rows(data.val_x))


def test_folder_cache_is_reused_and_invalidated_by_changes(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=30)
    cache = tmp_path / "cache"
    first = load_dataset("folder", data_dir=root, cache_dir=cache)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "train_x.npy").is_file()
    t0 = time.perf_counter()
    second = load_dataset("folder", data_dir=root, cache_dir=cache)
    warm = time.perf_counter() - t0
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.val_y, second.val_y)
    assert warm < 1.0
    # the cache is plain .npy (no pickles)
    assert np.load(entries[0] / "train_x.npy", allow_pickle=False).dtype == np.uint8
    # a changed file (new mtime) is a new entry; the changed pixels are read
    target = root / "cat" / "000.jpg"
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_dataset("folder", data_dir=root, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    assert not torch.equal(torch.cat([third.train_x, third.val_x]),
                           torch.cat([first.train_x, first.val_x]))
    # a subset decoded without the cache equals the subset taken from the cache
    uncached = load_dataset("folder", data_dir=root, max_train=10)
    cached = load_dataset("folder", data_dir=root, max_train=10, cache_dir=cache)
    assert torch.equal(uncached.train_x, cached.train_x)


def test_folder_errors_are_one_line(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder")
    assert "class sub-folders" in _one_line_error(excinfo)

    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", data_dir=tmp_path / "missing")
    assert "does not exist" in _one_line_error(excinfo)

    one = tmp_path / "one"
    write_image_folder(one, classes=("only",), per_class=3)
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", data_dir=one)
    assert "at least 2 class sub-folders" in _one_line_error(excinfo)

    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    (empty / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", data_dir=empty)
    assert "found none" in _one_line_error(excinfo)

    broken = write_image_folder(tmp_path / "broken", per_class=4)
    (broken / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", data_dir=broken, val_fraction=0.5)
    assert "bad.png" in _one_line_error(excinfo)

    split = tmp_path / "split"
    write_image_folder(split / "train", per_class=4)
    write_image_folder(split / "test", classes=("cat", "zebra"), per_class=2)
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", data_dir=split)
    assert "zebra" in _one_line_error(excinfo)


def test_decompression_bomb_is_refused_like_an_unreadable_image(tmp_path):
    root = write_image_folder(tmp_path / "bomb", per_class=4)
    path = root / "dog" / "bomb.png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())  # the header claims 100000 x 100000 (10 G pixels)
    raw[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))  # IHDR's CRC
    path.write_bytes(raw)
    with pytest.raises(DataError) as excinfo:
        load_dataset("folder", data_dir=root, val_fraction=0.5)
    message = _one_line_error(excinfo)
    assert "bomb.png" in message and "too large" in message


def test_16_bit_pngs_are_scaled_to_8_bits(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    rgba = np.stack([ramp, ramp // 2, ramp // 4, np.full_like(ramp, 65535)], axis=-1)
    for c in ("gray", "rgb", "rgba"):
        (tmp_path / c).mkdir()
    for i in range(2):
        Image.fromarray(ramp).save(tmp_path / "gray" / f"{i}.png")  # PIL: mode I;16
        write_png16(tmp_path / "rgb" / f"{i}.png", rgba[..., :3])
        write_png16(tmp_path / "rgba" / f"{i}.png", rgba)
    with Image.open(tmp_path / "gray" / "0.png") as im:
        assert im.mode == "I;16"
    data = load_dataset("folder", data_dir=tmp_path, val_fraction=0.5)  # 32x32: not resized
    x = torch.cat([data.train_x, data.val_x]).numpy().astype(np.int64)
    y = torch.cat([data.train_y, data.val_y]).numpy()
    expected = np.round(rgba[..., :3].transpose(2, 0, 1) / 257).astype(np.int64)  # (3, 32, 32)
    gray = x[y == data.classes.index("gray")]
    assert np.array_equal(gray, np.broadcast_to(expected[0], gray.shape))
    assert abs(gray.mean() - 127.5) < 0.5  # clipped, the ramp was nearly all white (254)
    for c in ("rgb", "rgba"):  # PIL keeps each sample's high byte: within one step
        assert np.abs(x[y == data.classes.index(c)] - expected).max() <= 1


def test_exif_orientation_is_applied_as_a_viewer_shows_the_photo(tmp_path):
    # A phone photo stored sideways: 32 wide, 16 high, left half white, with orientation 6
    # ("rotate 90 degrees clockwise to display"): displayed 16 wide, 32 high, top half white.
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = 255
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(stored).save(tmp_path / c / f"{i}.jpg", quality=95, exif=exif)
    data = load_dataset("folder", data_dir=tmp_path, image_size=32, val_fraction=0.5)
    image = data.train_x[0].numpy().astype(int)  # (3, 32, 32): resized to a square
    assert image[:, :12].min() > 200 and image[:, 20:].max() < 55  # top white, bottom black
    assert abs(int(image[:, :, :16].mean()) - int(image[:, :, 16:].mean())) < 5


def test_image_data_checks_its_tensors():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    ImageData("t", x, y, x, y, None, None, 2, ("a", "b"))
    with pytest.raises(ValueError, match="train_x"):
        ImageData("t", x.float(), y, x, y, None, None, 2, ("a", "b"))
    with pytest.raises(ValueError, match="val_y"):
        ImageData("t", x, y, x, y[:2], None, None, 2, ("a", "b"))
    with pytest.raises(ValueError, match="classes"):
        ImageData("t", x, y, x, y, None, None, 3, ("a", "b"))


def _random_data(seed: int = 0, n: int = 40, *, test: bool = True) -> ImageData:
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randint(0, 256, (m, 3, 8, 8), dtype=torch.uint8, generator=g),
                torch.randint(0, 10, (m,), generator=g))

    (tx, ty), (vx, vy), (sx, sy) = split(n), split(n // 4), split(n // 4)
    return ImageData("t", tx, ty, vx, vy, sx if test else None, sy if test else None, 10,
                     tuple("abcdefghij"))


def test_identity_is_stable_and_changes_with_any_image_or_label_of_its_splits():
    a = _random_data()
    assert a.identity() == _random_data().identity()
    val_y = a.val_y.clone()
    val_y[0] = (val_y[0] + 1) % 10
    assert dataclasses.replace(a, val_y=val_y).identity() != a.identity()
    train_x = a.train_x.clone()
    train_x[-1, 2, 7, 7] ^= 1  # one bit of the last image
    assert dataclasses.replace(a, train_x=train_x).identity() != a.identity()
    assert dataclasses.replace(a, train_x=a.train_x[:-1], train_y=a.train_y[:-1]).identity() \
        != a.identity()  # a smaller subset
    # the test split counts only where asked for: a search never sees it
    other_test = _random_data(seed=1)
    moved = dataclasses.replace(a, test_x=other_test.test_x, test_y=other_test.test_y)
    assert moved.identity() == a.identity()
    assert moved.identity(splits=("train", "test")) != a.identity(splits=("train", "test"))
    with pytest.raises(ValueError, match="no official test split"):
        _random_data(test=False).identity(splits=("train", "test"))
    with pytest.raises(ValueError, match="splits"):
        a.identity(splits=("train", "holdout"))


def test_unwritable_cache_only_warns(tmp_path):
    """The cache saves time; a read-only location must not stop the data from loading."""
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (10, 12), (40 * i, 80, 120)).save(root / c / f"{i}.png")
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write the image cache"):
        data = load_dataset("folder", data_dir=root, cache_dir=blocked, val_fraction=0.34)
    assert len(data.train_x) + len(data.val_x) == 6


def test_folder_decoding_reports_progress_and_a_cached_load_does_not(tmp_path):
    root = write_image_folder(tmp_path / "images")
    n = sum(1 for p in root.rglob("*") if p.is_file())
    seen: list[tuple[int, int]] = []
    load_dataset("folder", data_dir=root, cache_dir=tmp_path / "cache",
                 progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, n) for i in range(1, n + 1)]
    seen.clear()
    load_dataset("folder", data_dir=root, cache_dir=tmp_path / "cache",
                 progress=lambda done, total: seen.append((done, total)))
    assert seen == []  # read back from the cache: nothing decoded
