"""``folder``: class sub-folders of images (``DIR/<class>/*.png``), or ``DIR/train/<class>/...``
with ``DIR/test/<class>/...`` (or ``val/``) as the official split; scanned, then decoded to a
fixed square side, through the decode cache (evaluators/data/folder_cache.py) when one is
given."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluators.data.folder_cache import cache_entry, read_entry, write_entry
from evaluators.data.image_data import DataError
from evaluators.data.images import decode_square
from evaluators.data.source import Source, not_an_archive

__all__ = ["DEFAULT_FOLDER_SIZE", "IMAGE_SUFFIXES", "FolderScan", "read_folder", "scan_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_FOLDER_SIZE = 32  # side that folder images are resized to unless image_size is given


@dataclass
class _FolderSplit:
    files: list[str]
    labels: np.ndarray  # (N,) int64
    stats: list[tuple[str, int, int]]  # (relative path, mtime_ns, size) for the cache key


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: str) -> list[tuple[str, int, int]]:
    """(path, mtime_ns, size) of every image below ``folder``, sorted; plain strings and
    ``os.scandir`` because pathlib costs seconds on 60,000 files."""
    found, subdirs = [], []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                subdirs.append(e.path)
            elif e.name.lower().endswith(IMAGE_SUFFIXES):
                st = e.stat()
                found.append((e.path, st.st_mtime_ns, st.st_size))
    found.sort()
    for sub in sorted(subdirs):
        found += _images_under(sub)
    return found


def _scan_split(root: Path, split_dir: Path, classes: tuple[str, ...] | None) -> tuple[
        _FolderSplit, tuple[str, ...]]:
    per_class = [(d.name, _images_under(str(d))) for d in _class_dirs(split_dir)]
    per_class = [(n, files) for n, files in per_class if files]
    if classes is None:
        classes = tuple(n for n, _ in per_class)
        if len(classes) < 2:
            found = f"only {classes[0]!r}" if classes else "none"
            raise DataError(
                f"folder: {split_dir} needs at least 2 class sub-folders holding images "
                f"({', '.join(IMAGE_SUFFIXES)}), e.g. {split_dir / 'cat' / '0001.png'}; found "
                f"{found}")
    index = {n: i for i, n in enumerate(classes)}
    files, labels, stats = [], [], []
    prefix = len(str(root)) + 1
    for n, entries in per_class:
        if n not in index:
            raise DataError(f"folder: {split_dir / n} is a class that the training folder "
                            f"{root / 'train'} does not have")
        for path, mtime, size in entries:
            files.append(path)
            labels.append(index[n])
            stats.append((path[prefix:], mtime, size))
    return _FolderSplit(files, np.asarray(labels, np.int64), stats), classes


class _Counter:
    """Images decoded so far out of ``total``, told to ``progress`` after each."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _decode_all(files: list[str], size: int, fit: str,
                counter: _Counter | None = None) -> np.ndarray:
    out = np.empty((len(files), 3, size, size), np.uint8)
    for i, path in enumerate(files):
        out[i] = decode_square(path, size, fit=fit)
        if counter is not None:
            counter.tick()
    return out


@dataclass
class FolderScan:
    """A folder's image files, labels and classes, before anything is decoded."""

    root: Path
    train: _FolderSplit
    test: _FolderSplit | None  # the official test split (test/ or val/), if there is one
    classes: tuple[str, ...]


def scan_folder(data_dir: str | os.PathLike | None) -> FolderScan:
    """Find the classes and image files of a folder data set (see the module docstring)."""
    if data_dir is None:
        raise DataError("folder: needs a data folder (--data-dir DIR) of class sub-folders of "
                        "images, e.g. DIR/cat/0001.png and DIR/dog/0001.png")
    root = Path(data_dir).expanduser().resolve()
    not_an_archive("folder", root)
    if not root.is_dir():
        raise DataError(f"folder: data folder {root} does not exist; expected class sub-folders "
                        f"of images, e.g. {root / 'cat' / '0001.png'}")
    test_root = None
    if (root / "train").is_dir() and _class_dirs(root / "train"):  # the split layout
        train_root = root / "train"
        test_root = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    else:
        train_root = root
    train, classes = _scan_split(root, train_root, None)
    test = _scan_split(root, test_root, classes)[0] if test_root is not None else None
    if test is not None and not test.files:
        raise DataError(f"folder: {test_root} has no images in class sub-folders")
    return FolderScan(root, train, test, classes)


def read_folder(data_dir: str | os.PathLike | None, size: int,
                cache_dir: str | os.PathLike | None,
                progress: Callable[[int, int], None] | None = None, *,
                fit: str = "squash") -> Source:
    """The folder's images decoded to ``size`` x ``size`` (``fit``: see
    :func:`~evaluators.data.images.decode_square`), through the decode cache if given."""
    scan = scan_folder(data_dir)
    root, train, test, classes = scan.root, scan.train, scan.test, scan.classes
    cached = _cached_arrays(root, size, fit, train, test, cache_dir, progress)
    if cached is not None:
        train_all, test_x = cached

        def train_images(idx: np.ndarray) -> np.ndarray:
            return train_all[idx]
    else:  # decode only the files that the split and subsets select
        test_x = _decode_all(test.files, size, fit, _Counter(len(test.files), progress)) \
            if test is not None else None

        def train_images(idx: np.ndarray) -> np.ndarray:
            return _decode_all([train.files[i] for i in idx], size, fit,
                               _Counter(len(idx), progress))

    return Source(train_y=train.labels, train_images=train_images, test_x=test_x,
                  test_y=None if test is None else test.labels, classes=classes)


def _cached_arrays(root: Path, size: int, fit: str, train: _FolderSplit,
                   test: _FolderSplit | None,
                   cache_dir: str | os.PathLike | None,
                   progress: Callable[[int, int], None] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Decoded (train_x, test_x) from the cache, decoding and storing them on a miss; None when
    no cache is asked for."""
    if cache_dir is None:
        return None
    entry = cache_entry(cache_dir, root=root, size=size, fit=fit,
                        splits=[train.stats, None if test is None else test.stats])
    splits = {"train_x.npy": train} | ({"test_x.npy": test} if test is not None else {})
    arrays = read_entry(entry, {name: (len(s.files), 3, size, size)
                                for name, s in splits.items()})
    if arrays is not None:
        return arrays[0], (np.array(arrays[1]) if test is not None else None)
    counter = _Counter(sum(len(s.files) for s in splits.values()), progress)
    arrays = [_decode_all(s.files, size, fit, counter) for s in splits.values()]
    write_entry(entry, dict(zip(splits, arrays, strict=True)))
    return arrays[0], (arrays[1] if test is not None else None)
