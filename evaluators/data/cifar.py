"""``cifar10`` / ``cifar100``: the standard Python versions (Krizhevsky, 2009,
https://www.cs.toronto.edu/~kriz/cifar.html), read directly with a restricted unpickler that
admits only what those files hold (numpy arrays, dtypes, lists, bytes, ints), so a crafted file
cannot run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.data.image_data import DataError
from evaluators.data.source import Source, not_an_archive
from space.checks import one_line

__all__ = ["CIFAR_URL", "read_cifar"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

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
                f"{one_line(module)}.{one_line(name)}, which CIFAR files never hold (only numpy "
                "arrays, lists, bytes and ints); the file is corrupt or malicious") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._dataset}: refused to load {self._path}: it uses persistent ids, "
                        "which CIFAR files never hold")


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
                        f"({type(exc).__name__}: {one_line(exc)}); extract {spec['archive']} "
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


def _cifar_dir(dataset: str, data_dir: str | os.PathLike | None, spec: dict[str, Any]) -> Path:
    get = (f"download {spec['archive']} from {CIFAR_URL} and extract it into the data folder")
    if data_dir is None:
        raise DataError(f"{dataset}: needs a data folder (--data-dir DIR) holding "
                        f"{spec['folder']}/; {get}")
    root = Path(data_dir).expanduser()
    not_an_archive(dataset, root)
    if not root.is_dir():
        raise DataError(f"{dataset}: data folder {root} does not exist; {get}")
    first = spec["train"][0]
    for folder in (root / spec["folder"], root):
        if (folder / first).is_file():
            return folder
    raise DataError(f"{dataset}: expected {root / spec['folder'] / first} (or {first} directly "
                    f"in {root}); download {spec['archive']} from {CIFAR_URL} and extract it "
                    f"into {root}")


def read_cifar(dataset: str, data_dir: str | os.PathLike | None) -> Source:
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
    return Source(train_y=train_y, train_images=lambda idx: train_x[idx], test_x=test_x,
                  test_y=test_y, classes=classes)
