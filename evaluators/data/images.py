"""One image file as the network sees it: decoded as displayed (EXIF orientation, 16-bit
grayscale scaled, every mode as RGB), then fitted to a square or cut by a random-resized crop.

The folder reader (evaluators/data/folder.py) decodes whole folders with :func:`decode_square`;
the streaming loader (evaluators/streaming.py) decodes each batch's files in its workers with
:func:`decode_square` (evaluation view) or :func:`decode_crop` (training), so both paths read a
file the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from evaluators.data.image_data import DataError
from evaluators.transforms import crop_boxes
from space.checks import one_line

__all__ = ["FITS", "decode_crop", "decode_square", "read_header"]

FITS = ("squash", "crop")  # resize the whole image to the square / centre square, then resize
_EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 = stored as displayed


def _open_rgb(path: str):
    """The decoded RGB image of ``path`` (a PIL image), or :class:`DataError` naming it."""
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
            rgb = im.convert("RGB")
            rgb.load()
            return rgb
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise DataError(f"folder: cannot read image {path}: {one_line(exc)}") from None
    except Image.DecompressionBombError as exc:  # header over 2x Image.MAX_IMAGE_PIXELS
        raise DataError(f"folder: cannot read image {path}: it is too large to decode "
                        f"({one_line(exc)})") from None


def _planes(im) -> np.ndarray:
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def decode_square(path: str, size: int, *, fit: str = "squash") -> np.ndarray:
    """One image file -> (3, size, size) uint8. ``fit="squash"`` resizes the whole image to the
    square (its aspect ratio is lost); ``"crop"`` resizes its centre square (the shorter side
    becomes ``size``, as the usual "resize, then centre crop" evaluation does)."""
    from PIL import Image

    im = _open_rgb(path)
    w, h = im.size
    box = None
    if fit == "crop" and w != h:
        m = min(w, h)
        box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
    if im.size != (size, size) or box is not None:
        im = im.resize((size, size), Image.Resampling.BILINEAR, box=box)  # antialiased by PIL
    return _planes(im)


def decode_crop(path: str, params: np.ndarray, size: int) -> np.ndarray:
    """One image file -> (3, size, size) uint8: the random-resized crop that the five draws
    ``params`` (one row of :func:`~evaluators.transforms.draw_crops`) make of the original
    image, mirrored if its flip flag is set."""
    from PIL import Image

    im = _open_rgb(path)
    w, h = im.size
    left, top, bw, bh = crop_boxes(torch.as_tensor(params, dtype=torch.float64)[None], w, h)[0]
    box = (float(left), float(top), float(left + bw), float(top + bh))
    out = _planes(im.resize((size, size), Image.Resampling.BILINEAR, box=box))
    return np.ascontiguousarray(out[:, :, ::-1]) if params[4] >= 0.5 else out


def read_header(path: str) -> tuple[int, int]:
    """(width, height) from ``path``'s header, without decoding the pixels: the cheap check
    that a file is an image at all; :class:`DataError` naming it otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        raise DataError(f"folder: cannot read image {path}: {one_line(exc)}") from None
