"""Image data sets for proxy training, read from local files only (nothing is downloaded).

- ``digits``: scikit-learn's handwritten digits (1,797 8x8 grayscale images, 10 classes), which
  ship inside scikit-learn, so a search works offline with no data from the user.
- ``cifar10`` / ``cifar100``: the standard Python versions (Krizhevsky, 2009,
  https://www.cs.toronto.edu/~kriz/cifar.html), read directly with a restricted unpickler that
  admits only what those files hold (numpy arrays, dtypes, lists, bytes, ints).
- ``folder``: class sub-folders of PNG/JPEG images (``DIR/<class>/*.png``), or
  ``DIR/train/<class>/...`` with ``DIR/test/<class>/...`` (or ``val/``) as the official split.

Every data set becomes an :class:`ImageData`: uint8 tensors ``(N, 3, H, W)`` (grayscale is
repeated to 3 channels) and int64 labels. The validation split is drawn from the training images
by the seed, stratified per class, and is never trained on; it is the same for every candidate
of a run because it depends only on (data set, seed, val_fraction, max_val).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from space.checks import UserError

__all__ = ["DataError", "ImageData", "DATASETS", "default_cache_dir", "load_dataset",
           "CIFAR_URL", "IMAGE_SUFFIXES", "DEFAULT_FOLDER_SIZE"]

DATASETS = ("digits", "cifar10", "cifar100", "folder")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Share of the training images held out for the proxy's top-1 (None in load_dataset). Digits has
# only 1,797 images: a quarter (450) makes one image 0.2 points of top-1 instead of 0.6, which
# separates candidates that a 10% split (179 images) scores the same.
VAL_FRACTION = {"digits": 0.25}
DEFAULT_FOLDER_SIZE = 32  # side that folder images are resized to unless image_size is given
# Bump when the cached arrays' meaning changes (2: 16-bit grayscale scaled; 3: EXIF orientation).
_CACHE_VERSION = 3
_EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 = stored as displayed


class DataError(UserError):
    """A data set that cannot be found or read; the message says what was expected and where
    to get it."""


@dataclass(frozen=True, eq=False)
class ImageData:
    """A data set held in memory as uint8 tensors, split into train / validation (/ test)."""

    name: str
    train_x: torch.Tensor = field(repr=False)  # (N, 3, H, W) uint8
    train_y: torch.Tensor = field(repr=False)  # (N,) int64
    val_x: torch.Tensor = field(repr=False)  # (V, 3, H, W) uint8, held out from the train files
    val_y: torch.Tensor = field(repr=False)  # (V,) int64
    test_x: torch.Tensor | None = field(repr=False)  # official test set, or None
    test_y: torch.Tensor | None = field(repr=False)
    num_classes: int
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.classes) != self.num_classes:
            raise ValueError(f"classes: got {len(self.classes)} names for {self.num_classes} classes")
        splits = [("train", self.train_x, self.train_y), ("val", self.val_x, self.val_y)]
        if self.test_x is not None or self.test_y is not None:
            splits.append(("test", self.test_x, self.test_y))
        for split, x, y in splits:
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 \
                    or x.shape[1] != 3:
                raise ValueError(f"{split}_x: expected a uint8 tensor of shape (N, 3, H, W)")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
                raise ValueError(f"{split}_y: expected an int64 tensor of shape ({x.shape[0]},)")
            if len(x) == 0:
                raise ValueError(f"{split}_x: the split is empty")

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def with_val_in_train(self) -> ImageData:
        """The validation images joined to the training split, for a final training that is
        scored on the official test split (so nothing needs the validation split any more).
        ``val_x`` stays as it was; a data set without a test split is refused."""
        if self.test_x is None:
            raise DataError(f"{self.name}: no official test split, so its validation split is "
                            "the only held-out score and cannot join the training images")
        return dataclasses.replace(self, train_x=torch.cat([self.train_x, self.val_x]),
                                   train_y=torch.cat([self.train_y, self.val_y]))

    def describe(self) -> str:
        """One line for logs: split sizes, classes and image size."""
        h, w = self.image_size
        test = f" / {len(self.test_x)} test" if self.test_x is not None else ""
        return (f"{self.name}: {len(self.train_x)} train / {len(self.val_x)} val{test}, "
                f"{self.num_classes} classes, {h}x{w}")


# ---------------------------------------------------------------------------------------------
# The public loader


@dataclass
class _Source:
    """What a reader returns: labels up front, pixels on demand (a folder decodes only the
    files that the split and subsets select)."""

    train_y: np.ndarray  # (N,) int64
    train_images: Callable[[np.ndarray], np.ndarray]  # indices -> (k, 3, H, W) uint8
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    classes: tuple[str, ...]


def default_cache_dir() -> Path:
    """Where decoded image folders are cached: ``$XDG_CACHE_HOME/ghostnas`` (``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ghostnas"


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, seed: int = 0,
                 val_fraction: float | None = None, max_train: int | None = None,
                 max_val: int | None = None, image_size: int | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ImageData:
    """Read a data set and split it.

    ``val_fraction`` (default: :data:`VAL_FRACTION`, else 0.1) of each class's training images (drawn by ``seed``) form the validation
    split; ``max_train`` / ``max_val`` then keep seeded, class-stratified subsets of the two
    splits (the validation images do not depend on ``max_train``). ``image_size`` resizes every
    image to a square side (folders default to 32; the others keep their native size).
    ``cache_dir`` keeps decoded folder images as ``.npy`` files keyed by the folder's path, file
    list, sizes and mtimes, so a second load skips the decoding. ``progress(done, total)`` is
    called after each image a folder load decodes (none when the cache has them).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: got {seed!r}, expected an integer")
    if val_fraction is None:
        val_fraction = VAL_FRACTION.get(name, 0.1)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: got {val_fraction!r}, expected a number in (0, 1)")
    for arg, value in (("max_train", max_train), ("max_val", max_val), ("image_size", image_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{arg}: got {value!r}, expected a positive integer or None")

    if name == "digits":
        source = _read_digits()
    elif name in ("cifar10", "cifar100"):
        source = _read_cifar(name, data_dir)
    else:
        source = _read_folder(data_dir, image_size or DEFAULT_FOLDER_SIZE, cache_dir, progress)
        image_size = None  # already decoded at that size

    train_idx, val_idx = _split(source.train_y, val_fraction, seed, name)
    for arg, value in (("max_train", max_train), ("max_val", max_val)):
        if value is not None and value < len(source.classes):
            raise DataError(f"{name}: {arg} (--{arg.replace('_', '-')}) {value} is fewer than "
                            f"its {len(source.classes)} classes; pass at least "
                            f"{len(source.classes)} (a class-stratified subset holds one image "
                            "of each)")
    if max_train is not None:
        train_idx = _stratified_subset(source.train_y, train_idx, max_train, seed, salt=1)
    if max_val is not None:
        val_idx = _stratified_subset(source.train_y, val_idx, max_val, seed, salt=2)
    pixels = source.train_images(np.concatenate([train_idx, val_idx]))
    train_x, val_x = pixels[:len(train_idx)], pixels[len(train_idx):]
    test_x = source.test_x
    if image_size is not None:
        train_x, val_x = _resize(train_x, image_size), _resize(val_x, image_size)
        test_x = None if test_x is None else _resize(test_x, image_size)

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

    return ImageData(
        name=name, train_x=tensor(train_x), train_y=tensor(source.train_y[train_idx]),
        val_x=tensor(val_x), val_y=tensor(source.train_y[val_idx]),
        test_x=tensor(test_x), test_y=tensor(source.test_y),
        num_classes=len(source.classes), classes=source.classes)


# ---------------------------------------------------------------------------------------------
# Splits


def _split(y: np.ndarray, fraction: float, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: per class, the first round(n * fraction) of a seeded permutation
    go to validation (at least one and never all of a class with two or more images)."""
    rng = np.random.default_rng([seed, 0])
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        val.append(idx[:k])
        train.append(idx[k:])
    train_idx, val_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if len(val_idx) == 0:
        raise DataError(f"{name}: too few images for a validation split (every class has one "
                        "image); add images")
    return train_idx, val_idx


def _stratified_subset(y: np.ndarray, idx: np.ndarray, n: int, seed: int, *,
                       salt: int) -> np.ndarray:
    """``n`` of ``idx`` drawn by the seed, each class keeping its share (largest remainder)
    and, when ``n`` is at least the number of classes, at least one image (taken from the
    classes with the most)."""
    if n >= len(idx):
        return idx
    rng = np.random.default_rng([seed, salt])
    classes, counts = np.unique(y[idx], return_counts=True)
    exact = counts * (n / len(idx))
    take = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[:n - int(take.sum())]] += 1
    if n >= len(classes):
        for c in np.flatnonzero(take == 0):  # a small class rounded away entirely
            take[np.argmax(take)] -= 1
            take[c] = 1
    chosen = [rng.permutation(idx[y[idx] == c])[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) uint8, bilinear (antialiased when shrinking)."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    out = np.empty((len(x), 3, size, size), np.uint8)
    shrink = size < x.shape[2] or size < x.shape[3]
    for i in range(0, len(x), 4096):
        chunk = torch.from_numpy(x[i:i + 4096]).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        out[i:i + 4096] = chunk.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


# ---------------------------------------------------------------------------------------------
# digits (embedded)


def _read_digits() -> _Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    x = np.repeat(gray[:, None], 3, axis=1)  # (1797, 3, 8, 8)
    y = digits.target.astype(np.int64)
    return _Source(train_y=y, train_images=lambda idx: x[idx], test_x=None, test_y=None,
                   classes=tuple(str(c) for c in digits.target_names))


# ---------------------------------------------------------------------------------------------
# CIFAR (Python pickle format)

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py", "archive": "cifar-10-python.tar.gz",
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": "test_batch",
        "meta": "batches.meta", "labels": "labels", "names": "label_names", "classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python", "archive": "cifar-100-python.tar.gz",
        "train": ("train",), "test": "test",
        "meta": "meta", "labels": "fine_labels", "names": "fine_label_names", "classes": 100,
    },
}
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name. The originals (Python 2, protocol 2) name
    ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``; files re-saved
    by numpy 2 name ``numpy._core...``, and protocol 5 uses ``_frombuffer``. Dicts, lists,
    bytes, strings and ints are pickle opcodes, not globals. The functions are taken from
    numpy's own reductions so that no module is imported by name."""
    probe = np.zeros(1, np.uint8)
    reconstruct = probe.__reduce__()[0]
    frombuffer = probe.__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches and refuses every global outside :func:`_allowed_globals`, so a
    crafted file cannot call ``os.system`` or import anything."""

    def __init__(self, file: Any, *, path: Path, dataset: str) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 strings -> bytes, as the format needs
        self._path = path
        self._dataset = dataset
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._dataset}: refused to load {self._path}: it references "
                f"{_one_line(module)}.{_one_line(name)}, which CIFAR files never hold (only numpy "
                "arrays, lists, bytes and ints); the file is corrupt or malicious") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._dataset}: refused to load {self._path}: it uses persistent ids, "
                        "which CIFAR files never hold")


def _one_line(text: Any, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _load_cifar_pickle(path: Path, dataset: str, spec: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(
            f"{dataset}: missing {path}; the folder should hold {', '.join(spec['train'])} and "
            f"{spec['test']}: extract {spec['archive']} again (from {CIFAR_URL})")
    try:
        with path.open("rb") as fh:
            obj = _CifarUnpickler(fh, path=path, dataset=dataset).load()
    except DataError:
        raise
    except Exception as exc:  # truncated files raise EOFError, garbage UnpicklingError, ...
        raise DataError(f"{dataset}: cannot read {path}: truncated or not a CIFAR pickle "
                        f"({type(exc).__name__}: {_one_line(exc)}); extract {spec['archive']} "
                        f"again (from {CIFAR_URL})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{dataset}: {path} holds a {type(obj).__name__}, expected the dict of "
                        "a CIFAR batch")
    # Keys are bytes in the originals (Python 2 str); accept str keys of re-saved files too.
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, dataset: str, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_cifar_pickle(path, dataset, spec)
    key = spec["labels"]
    for k in ("data", key):
        if k not in batch:
            raise DataError(f"{dataset}: {path} has no {k!r} entry; expected a CIFAR batch with "
                            f"'data' and {key!r}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{dataset}: {path}: 'data' is {type(data).__name__} {shape}, expected "
                        "a uint8 array of shape (N, 3072)")
    try:
        labels = np.asarray(batch[key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{dataset}: {path}: {key!r} is not a list of integers") from None
    if labels.shape != (len(data),):
        raise DataError(f"{dataset}: {path}: {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec["classes"]):
        raise DataError(f"{dataset}: {path}: labels outside 0..{spec['classes'] - 1}")
    return data.reshape(-1, 3, 32, 32), labels  # rows are the R, G, B planes of 32x32


def _not_an_archive(dataset: str, path: Path) -> None:
    if path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar", ".zip")):
        raise DataError(f"{dataset}: {path} is an archive; extract it first (e.g. tar -xzf "
                        f"{path} -C DIR) and pass the folder DIR")


def _cifar_dir(dataset: str, data_dir: str | os.PathLike | None, spec: dict[str, Any]) -> Path:
    get = (f"download {spec['archive']} from {CIFAR_URL} and extract it into the data folder")
    if data_dir is None:
        raise DataError(f"{dataset}: needs a data folder (--data-dir DIR) holding "
                        f"{spec['folder']}/; {get}")
    root = Path(data_dir).expanduser()
    _not_an_archive(dataset, root)
    if not root.is_dir():
        raise DataError(f"{dataset}: data folder {root} does not exist; {get}")
    first = spec["train"][0]
    for folder in (root / spec["folder"], root):
        if (folder / first).is_file():
            return folder
    raise DataError(f"{dataset}: expected {root / spec['folder'] / first} (or {first} directly "
                    f"in {root}); download {spec['archive']} from {CIFAR_URL} and extract it "
                    f"into {root}")


def _read_cifar(dataset: str, data_dir: str | os.PathLike | None) -> _Source:
    spec = _CIFAR[dataset]
    folder = _cifar_dir(dataset, data_dir, spec)
    parts = [_cifar_batch(folder / f, dataset, spec) for f in spec["train"]]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _cifar_batch(folder / spec["test"], dataset, spec)
    classes = tuple(str(i) for i in range(spec["classes"]))
    if dataset == "cifar10":
        classes = _CIFAR10_NAMES
    meta_path = folder / spec["meta"]
    if meta_path.is_file():  # class names; optional, since the labels are what training needs
        names = _load_cifar_pickle(meta_path, dataset, spec).get(spec["names"])
        if not isinstance(names, list) or len(names) != spec["classes"] \
                or not all(isinstance(n, (bytes, str)) for n in names):
            raise DataError(f"{dataset}: {meta_path}: {spec['names']!r} should be a list of "
                            f"{spec['classes']} class names")
        classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n
                        for n in names)
    return _Source(train_y=train_y, train_images=lambda idx: train_x[idx], test_x=test_x,
                   test_y=test_y, classes=classes)


# ---------------------------------------------------------------------------------------------
# Image folders


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


def _decode(path: str, size: int) -> np.ndarray:
    """One image file -> (3, size, size) uint8, as it is displayed (EXIF orientation applied:
    phone photos are stored sideways); grayscale and palette images become RGB."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                im = ImageOps.exif_transpose(im)
            if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grayscale PNG
                # convert() would clip 0..65535 to 0..255 (nearly all white): scale to 8 bits.
                # 16-bit RGB(A) opens as RGB(A) already, PIL keeping each sample's high byte.
                gray = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(np.round(gray / 257), 0, 255).astype(np.uint8), "L")
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)  # antialiased by PIL
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise DataError(f"folder: cannot read image {path}: {_one_line(exc)}") from None
    except Image.DecompressionBombError as exc:  # header over 2x Image.MAX_IMAGE_PIXELS
        raise DataError(f"folder: cannot read image {path}: it is too large to decode "
                        f"({_one_line(exc)})") from None


class _Counter:
    """Images decoded so far out of ``total``, told to ``progress`` after each."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _decode_all(files: list[str], size: int, counter: _Counter | None = None) -> np.ndarray:
    out = np.empty((len(files), 3, size, size), np.uint8)
    for i, path in enumerate(files):
        out[i] = _decode(path, size)
        if counter is not None:
            counter.tick()
    return out


def _read_folder(data_dir: str | os.PathLike | None, size: int,
                 cache_dir: str | os.PathLike | None,
                 progress: Callable[[int, int], None] | None = None) -> _Source:
    if data_dir is None:
        raise DataError("folder: needs a data folder (--data-dir DIR) of class sub-folders of "
                        "images, e.g. DIR/cat/0001.png and DIR/dog/0001.png")
    root = Path(data_dir).expanduser().resolve()
    _not_an_archive("folder", root)
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

    cached = _cached_arrays(root, size, train, test, cache_dir, progress)
    if cached is not None:
        train_all, test_x = cached

        def train_images(idx: np.ndarray) -> np.ndarray:
            return train_all[idx]
    else:  # decode only the files that the split and subsets select
        test_x = _decode_all(test.files, size, _Counter(len(test.files), progress)) \
            if test is not None else None

        def train_images(idx: np.ndarray) -> np.ndarray:
            return _decode_all([train.files[i] for i in idx], size,
                               _Counter(len(idx), progress))

    return _Source(train_y=train.labels, train_images=train_images, test_x=test_x,
                   test_y=None if test is None else test.labels, classes=classes)


def _cached_arrays(root: Path, size: int, train: _FolderSplit, test: _FolderSplit | None,
                   cache_dir: str | os.PathLike | None,
                   progress: Callable[[int, int], None] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Decoded (train_x, test_x) from the cache, decoding and storing them on a miss; None when
    no cache is asked for."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(
        {"version": _CACHE_VERSION, "root": str(root), "size": size}).encode())
    for split in (train, test):
        digest.update(b"\0split\0")
        if split is not None:  # paths are relative to root, so the key is exact and cheap
            digest.update("\n".join(f"{p}\t{m}\t{n}" for p, m, n in split.stats).encode())
    key = digest.hexdigest()[:20]
    entry = Path(cache_dir).expanduser() / f"folder-{key}"
    names = ["train_x.npy"] + (["test_x.npy"] if test is not None else [])
    try:
        # Memory-mapped: the split gathers its rows straight from the page cache, one copy.
        arrays = [np.load(entry / n, allow_pickle=False, mmap_mode="r") for n in names]
        expected = [len(train.files)] + ([len(test.files)] if test is not None else [])
        if all(a.dtype == np.uint8 and a.shape == (n, 3, size, size)
               for a, n in zip(arrays, expected, strict=True)):
            return arrays[0], (np.array(arrays[1]) if test is not None else None)
    except (OSError, ValueError):  # a miss, or a damaged entry: decode again
        pass
    counter = _Counter(len(train.files) + (len(test.files) if test is not None else 0), progress)
    arrays = [_decode_all(train.files, size, counter)]
    if test is not None:
        arrays.append(_decode_all(test.files, size, counter))
    try:
        entry.mkdir(parents=True, exist_ok=True)
        for n, a in zip(names, arrays, strict=True):
            tmp = entry / f".{n}.{os.getpid()}.tmp"
            with tmp.open("wb") as fh:
                np.save(fh, a, allow_pickle=False)
            os.replace(tmp, entry / n)  # concurrent trials never read a half-written file
    except OSError as exc:  # the cache only saves time: a read-only or full disk is no error
        warnings.warn(f"folder: cannot write the image cache {entry} ({_one_line(exc)}); "
                      "continuing without it", stacklevel=2)
    return arrays[0], (arrays[1] if test is not None else None)
