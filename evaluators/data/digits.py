"""``digits``: scikit-learn's handwritten digits (1,797 8x8 grayscale images, 10 classes), which
ship inside scikit-learn, so a search works offline with no data from the user."""

from __future__ import annotations

import numpy as np

from evaluators.data.source import Source

__all__ = ["read_digits"]


def read_digits() -> Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    x = np.repeat(gray[:, None], 3, axis=1)  # (1797, 3, 8, 8)
    y = digits.target.astype(np.int64)
    return Source(train_y=y, train_images=lambda idx: x[idx], test_x=None, test_y=None,
                  classes=tuple(str(c) for c in digits.target_names))
