"""What each format's reader (digits, CIFAR, image folders) hands the loader, and the checks the
readers share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluators.data.image_data import DataError

__all__ = ["Source", "not_an_archive"]


@dataclass
class Source:
    """A reader's result: labels up front, pixels on demand (a folder decodes only the files
    that the split and subsets select)."""

    train_y: np.ndarray  # (N,) int64
    train_images: Callable[[np.ndarray], np.ndarray]  # indices -> (k, 3, H, W) uint8
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    classes: tuple[str, ...]


def not_an_archive(dataset: str, path: Path) -> None:
    """Refuse a downloaded archive given where its extracted folder belongs."""
    if path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar", ".zip")):
        raise DataError(f"{dataset}: {path} is an archive; extract it first (e.g. tar -xzf "
                        f"{path} -C DIR) and pass the folder DIR")
