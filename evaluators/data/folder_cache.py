"""The decode cache of image folders: decoded arrays as ``.npy`` files, so that a second load of
the same folder skips decoding every image.

An entry is a folder ``folder-<key>`` under the cache directory. The key hashes the folder's
path, the image side and every file's relative path, mtime and size, so a changed, added or
removed image misses. Entries are plain ``.npy`` (no pickles), each replaced atomically, so
concurrent trials never read a half-written file; a damaged entry reads as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from space.checks import one_line
from space.io import atomic_write

__all__ = ["default_cache_dir", "cache_entry", "read_entry", "write_entry"]

# Bump when the cached arrays' meaning changes (2: 16-bit grayscale scaled; 3: EXIF orientation).
_CACHE_VERSION = 3


def default_cache_dir() -> Path:
    """Where decoded image folders are cached: ``$XDG_CACHE_HOME/ghostnas`` (``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ghostnas"


def cache_entry(cache_dir: str | os.PathLike, *, root: Path, size: int,
                splits: Sequence[list[tuple[str, int, int]] | None],
                fit: str = "squash") -> Path:
    """The entry folder for ``root``'s images at ``size`` fitted by ``fit``; ``splits`` holds
    each split's (path relative to root, mtime_ns, size) list, or None for a split the folder
    lacks."""
    key = {"version": _CACHE_VERSION, "root": str(root), "size": size}
    if fit != "squash":  # the key of the original fit stays as it was: its entries still hit
        key["fit"] = fit
    digest = hashlib.sha256(json.dumps(key).encode())
    for stats in splits:
        digest.update(b"\0split\0")
        if stats is not None:  # paths are relative to root, so the key is exact and cheap
            digest.update("\n".join(f"{p}\t{m}\t{n}" for p, m, n in stats).encode())
    return Path(cache_dir).expanduser() / f"folder-{digest.hexdigest()[:20]}"


def read_entry(entry: Path, shapes: dict[str, tuple[int, ...]]) -> list[np.ndarray] | None:
    """The arrays ``name -> shape`` of ``entry``, memory-mapped (a split then gathers its rows
    straight from the page cache, one copy); None on a miss or a damaged entry."""
    try:
        arrays = [np.load(entry / name, allow_pickle=False, mmap_mode="r") for name in shapes]
    except (OSError, ValueError):
        return None
    if all(a.dtype == np.uint8 and a.shape == shape
           for a, shape in zip(arrays, shapes.values(), strict=True)):
        return arrays
    return None


def write_entry(entry: Path, arrays: dict[str, np.ndarray]) -> None:
    """Store ``name -> array`` in ``entry``. The cache only saves time: a read-only or full
    disk is a warning, not an error."""
    try:
        entry.mkdir(parents=True, exist_ok=True)
        for name, a in arrays.items():
            atomic_write(entry / name, lambda fh, a=a: np.save(fh, a, allow_pickle=False))
    except OSError as exc:
        warnings.warn(f"folder: cannot write the image cache {entry} ({one_line(exc)}); "
                      "continuing without it", stacklevel=2)
