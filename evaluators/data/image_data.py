"""A data set in memory: :class:`ImageData` (uint8 images and int64 labels, split into train,
validation and an optional official test split) and :class:`DataError`."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import torch

from space.checks import UserError

__all__ = ["DataError", "ImageData"]


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

    def identity(self, *, splits: tuple[str, ...] = ("train", "val")) -> str:
        """A hash of the number of classes and the images and labels of ``splits`` (as
        tensors, in order); by default what a search trains and selects on, never the test
        split. Two loads of the same subset agree; a different subset, split, seed or image
        changes it."""
        unknown = [s for s in splits if s not in ("train", "val", "test")]
        if unknown:
            raise ValueError(f"splits: got {unknown[0]!r}, expected 'train', 'val' or 'test'")
        if "test" in splits and self.test_x is None:
            raise ValueError(f"splits: {self.name} has no official test split")
        h = hashlib.sha256()
        h.update(f"classes={int(self.num_classes)}".encode())
        for name in (f"{s}_{xy}" for s in splits for xy in "xy"):
            t = getattr(self, name).detach().to("cpu").contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def held_out(self) -> tuple[str, torch.Tensor, torch.Tensor]:
        """("test", images, labels) of the official test split if there is one, else ("val",
        ...) of the validation split: where a final training is scored."""
        if self.test_x is not None:
            return "test", self.test_x, self.test_y
        return "val", self.val_x, self.val_y

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
