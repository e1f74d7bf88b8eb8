"""The held-out validation split and the seeded subsets, both stratified per class.

The validation split depends only on the labels, the fraction and the seed, so it is the same
for every candidate of a run and does not change with ``max_train``.
"""

from __future__ import annotations

import numpy as np

from evaluators.data.image_data import DataError

__all__ = ["split_indices", "stratified_subset"]


def split_indices(y: np.ndarray, fraction: float, seed: int,
                  name: str) -> tuple[np.ndarray, np.ndarray]:
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


def stratified_subset(y: np.ndarray, idx: np.ndarray, n: int, seed: int, *,
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
