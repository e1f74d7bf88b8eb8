"""A folder data set as lists of files (:class:`FolderFiles`): what the streaming loader reads
while training, for folders whose decoded images would not fit in memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from evaluators.data.image_data import DataError
from evaluators.data.images import read_header

__all__ = ["FolderFiles"]


@dataclass(frozen=True, eq=False)
class FolderFiles:
    """A folder data set's splits as file paths and int64 labels, with the interface of
    :class:`~evaluators.data.ImageData` that training needs (``held_out``, ``describe``, ...).

    ``side`` is the square an image is evaluated from (resized so that its shorter side is
    ``side``, centre square), the size an in-memory copy of the same folder would hold; it is
    what ``image_size`` reports, so a run may move between the two paths on resume.
    """

    name: str
    side: int
    classes: tuple[str, ...]
    train_files: tuple[str, ...] = field(repr=False)
    train_y: torch.Tensor = field(repr=False)  # (N,) int64
    val_files: tuple[str, ...] = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    test_files: tuple[str, ...] | None = field(repr=False)
    test_y: torch.Tensor | None = field(repr=False)

    def __post_init__(self) -> None:
        splits = [("train", self.train_files, self.train_y), ("val", self.val_files, self.val_y)]
        if self.test_files is not None:
            splits.append(("test", self.test_files, self.test_y))
        for split, files, y in splits:
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (
                    len(files),):
                raise ValueError(f"{split}_y: expected an int64 tensor of shape ({len(files)},)")
            if not files:
                raise ValueError(f"{split}_files: the split is empty")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.side, self.side

    @property
    def test_x(self) -> tuple[str, ...] | None:
        """The official test split's files (ImageData's ``test_x``: whether there is one)."""
        return self.test_files

    def held_out(self) -> tuple[str, tuple[str, ...], torch.Tensor]:
        """("test", files, labels) of the official test split if there is one, else ("val",
        ...) of the validation split."""
        if self.test_files is not None:
            return "test", self.test_files, self.test_y
        return "val", self.val_files, self.val_y

    def with_val_in_train(self) -> FolderFiles:
        """The validation files joined to the training split (see ImageData's)."""
        if self.test_files is None:
            raise DataError(f"{self.name}: no official test split, so its validation split is "
                            "the only held-out score and cannot join the training images")
        return dataclasses.replace(self, train_files=self.train_files + self.val_files,
                                   train_y=torch.cat([self.train_y, self.val_y]))

    def images(self) -> int:
        """Training, validation and test images in all."""
        return len(self.train_files) + len(self.val_files) + len(self.test_files or ())

    def check_headers(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Read every file's header (not its pixels): a file that is no image at all stops the
        run now, with one line naming it, instead of in the middle of an epoch."""
        files = [*self.train_files, *self.val_files, *(self.test_files or ())]
        for done, path in enumerate(files, 1):
            read_header(path)
            if progress is not None:
                progress(done, len(files))

    def describe(self) -> str:
        """One line for logs, as ImageData's, saying that the images are read while training."""
        test = f" / {len(self.test_files)} test" if self.test_files is not None else ""
        return (f"{self.name}: {len(self.train_files)} train / {len(self.val_files)} val{test}, "
                f"{self.num_classes} classes, {self.side}x{self.side}, read from disk while "
                "training")
