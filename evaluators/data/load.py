""":func:`load_dataset`: read a data set with its format's reader, split off the validation
images, keep the seeded subsets asked for and resize, into an :class:`ImageData`; and
:func:`load_folder_files`: the same split of a folder as lists of files, read while training."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from evaluators.data.cifar import read_cifar
from evaluators.data.digits import read_digits
from evaluators.data.files import FolderFiles
from evaluators.data.folder import DEFAULT_FOLDER_SIZE, read_folder, scan_folder
from evaluators.data.image_data import DataError, ImageData
from evaluators.data.images import FITS
from evaluators.data.splits import split_indices, stratified_subset
from evaluators.transforms import resize_images
from space.checks import check_float, check_int

__all__ = ["DATASETS", "VAL_FRACTION", "load_dataset", "load_folder_files", "select_splits"]

DATASETS = ("digits", "cifar10", "cifar100", "folder")
# Share of the training images held out for the proxy's top-1 (None in load_dataset). Digits has
# only 1,797 images: a quarter (450) makes one image 0.2 points of top-1 instead of 0.6, which
# separates candidates that a 10% split (179 images) scores the same.
VAL_FRACTION = {"digits": 0.25}


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, seed: int = 0,
                 val_fraction: float | None = None, max_train: int | None = None,
                 max_val: int | None = None, image_size: int | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 fit: str = "squash") -> ImageData:
    """Read a data set and split it.

    ``val_fraction`` (default: :data:`VAL_FRACTION`, else 0.1) of each class's training images
    (drawn by ``seed``) form the validation split; ``max_train`` / ``max_val`` then keep
    seeded, class-stratified subsets of the two splits (the validation images do not depend on
    ``max_train``). ``image_size`` resizes every image to a square side (folders default to 32;
    the others keep their native size); ``fit`` is how a folder's images become square
    (:func:`~evaluators.data.images.decode_square`). ``cache_dir`` keeps decoded folder images
    as ``.npy`` files keyed by the folder's path, file list, sizes and mtimes, so a second load
    skips the decoding. ``progress(done, total)`` is called after each image a folder load
    decodes (none when the cache has them).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    val_fraction = _check(name, seed, val_fraction, max_train, max_val, image_size)
    if fit not in FITS:
        raise DataError(f"fit: got {fit!r}, expected one of {', '.join(FITS)}")

    if name == "digits":
        source = read_digits()
    elif name in ("cifar10", "cifar100"):
        source = read_cifar(name, data_dir)
    else:
        source = read_folder(data_dir, image_size or DEFAULT_FOLDER_SIZE, cache_dir, progress,
                             fit=fit)
        image_size = None  # already decoded at that size

    train_idx, val_idx = select_splits(name, source.train_y, source.classes, seed=seed,
                                       val_fraction=val_fraction, max_train=max_train,
                                       max_val=max_val)
    pixels = _tensor(source.train_images(np.concatenate([train_idx, val_idx])))
    train_x, val_x = pixels[:len(train_idx)], pixels[len(train_idx):]
    test_x = _tensor(source.test_x)
    if image_size is not None:
        train_x, val_x = resize_images(train_x, image_size), resize_images(val_x, image_size)
        test_x = None if test_x is None else resize_images(test_x, image_size)
    return ImageData(
        name=name, train_x=train_x, train_y=_tensor(source.train_y[train_idx]),
        val_x=val_x, val_y=_tensor(source.train_y[val_idx]),
        test_x=test_x, test_y=_tensor(source.test_y),
        num_classes=len(source.classes), classes=source.classes)


def _check(name: str, seed: int, val_fraction: float | None, max_train: int | None,
           max_val: int | None, image_size: int | None) -> float:
    """The arguments' ranges; returns the validation share (the data set's default if None)."""
    check_int("seed", seed, minimum=0, error=DataError)
    if val_fraction is None:
        val_fraction = VAL_FRACTION.get(name, 0.1)
    check_float("val_fraction", val_fraction, low=0.0, high=1.0, error=DataError)
    for arg, value in (("max_train", max_train), ("max_val", max_val), ("image_size", image_size)):
        if value is not None:
            check_int(arg, value, error=DataError)
    return val_fraction


def select_splits(name: str, train_y: np.ndarray, classes: tuple[str, ...], *, seed: int,
                  val_fraction: float, max_train: int | None,
                  max_val: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into the training files: the seeded validation split, then
    the seeded subsets asked for."""
    train_idx, val_idx = split_indices(train_y, val_fraction, seed, name)
    for arg, value in (("max_train", max_train), ("max_val", max_val)):
        if value is not None and value < len(classes):
            raise DataError(f"{name}: {arg} (--{arg.replace('_', '-')}) {value} is fewer than "
                            f"its {len(classes)} classes; pass at least {len(classes)} (a "
                            "class-stratified subset holds one image of each)")
    if max_train is not None:
        train_idx = stratified_subset(train_y, train_idx, max_train, seed, salt=1)
    if max_val is not None:
        val_idx = stratified_subset(train_y, val_idx, max_val, seed, salt=2)
    return train_idx, val_idx


def load_folder_files(data_dir: str | os.PathLike | None, *, side: int, seed: int = 0,
                      val_fraction: float | None = None, max_train: int | None = None,
                      max_val: int | None = None) -> FolderFiles:
    """A folder data set as file lists, split exactly as :func:`load_dataset` splits it (same
    scanner, same seeded validation split and subsets), for reading while training;
    ``side``: the square side its images are evaluated from (see :class:`FolderFiles`)."""
    val_fraction = _check("folder", seed, val_fraction, max_train, max_val, side)
    scan = scan_folder(data_dir)
    train_idx, val_idx = select_splits("folder", scan.train.labels, scan.classes, seed=seed,
                                       val_fraction=val_fraction, max_train=max_train,
                                       max_val=max_val)
    files = scan.train.files
    test = scan.test
    return FolderFiles(
        name="folder", side=side, classes=scan.classes,
        train_files=tuple(files[i] for i in train_idx),
        train_y=_tensor(scan.train.labels[train_idx]),
        val_files=tuple(files[i] for i in val_idx), val_y=_tensor(scan.train.labels[val_idx]),
        test_files=None if test is None else tuple(test.files),
        test_y=None if test is None else _tensor(test.labels))


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))
