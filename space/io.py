"""Files: bounded JSON reading, atomic writing, and architecture files.

Architecture files are JSON only, size-limited, dispatched on the optional ``family`` key. Every
file GhostNAS writes (run tables, latency tables, checkpoints, caches) is replaced atomically
through :func:`atomic_write`, so a reader or a kill mid-write never sees a torn file.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from space.checks import ArchitectureError, json_kind
from space.ghostnet import Architecture
from space.mobilenetv3 import MobileNetV3Arch
from space.registry import create_architecture, list_models

__all__ = ["ArchLike", "FAMILIES", "MAX_JSON_BYTES", "architecture_from_dict", "read_json_file",
           "load_architecture", "save_architecture", "resolve_architecture", "atomic_write",
           "atomic_write_text", "FILE_MODE"]

ArchLike = Architecture | MobileNetV3Arch
FAMILIES: dict[str, type] = {Architecture.family: Architecture,
                             MobileNetV3Arch.family: MobileNetV3Arch}
MAX_JSON_BYTES = 4 * 1024 * 1024  # architecture, space and latency-table files are far smaller


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file; mkstemp alone gives 0600


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Replace ``path`` with what ``write`` writes to a binary file object, so that readers see
    the old or the new file, never a mix: a temporary file beside it, fsync, ``os.replace``. A
    kill mid-write may leave a ``.<name>.<random>.tmp`` file, which nothing reads."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of ``text`` as UTF-8 (newlines written as given)."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a key given twice is an error, not "the last one wins"."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return data


def read_json_file(path: str | os.PathLike, *, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file as data, refusing oversized or pathologically nested input.

    Raises :class:`ArchitectureError` (a ``ValueError``) whose message names the file.
    """
    if not os.fspath(path).strip():
        raise ArchitectureError(f"{what} file: got an empty path; pass the file's path")
    path = Path(path)
    if not path.is_file():
        raise ArchitectureError(f"{what} file {str(path)!r} does not exist (or is not a file)")
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ArchitectureError(
            f"{what} file {str(path)!r} is larger than {max_bytes // 1024} KiB; refusing to parse it")
    if raw.startswith(codecs.BOM_UTF8):  # Windows editors write one; JSON itself has none
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise ArchitectureError(f"{what} file {str(path)!r} is "
                                f"{'UTF-16' if utf16 else 'not UTF-8'} text; save it as UTF-8 "
                                "(the encoding of JSON files)") from None
    except RecursionError:
        raise ArchitectureError(f"{what} file {str(path)!r} is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ArchitectureError(
            f"{what} file {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}") from None
    except _DuplicateKey as exc:
        raise ArchitectureError(f"{what} file {str(path)!r} has the key {exc.args[0]!r} twice in "
                                "one object; keep one") from None
    except ValueError:  # json.loads's only other ValueError: an integer past int()'s digit limit
        raise ArchitectureError(
            f"{what} file {str(path)!r} is not valid JSON: it holds an integer of more than "
            f"{sys.get_int_max_str_digits()} digits") from None


def architecture_from_dict(data: Any) -> ArchLike:
    """Parse an architecture object of any family (``family`` defaults to ``ghostnet``)."""
    if not isinstance(data, dict):
        raise ArchitectureError(f"architecture: got {json_kind(data)}, expected a JSON object")
    family = data.get("family", Architecture.family)
    if not isinstance(family, str) or family not in FAMILIES:  # a list or dict is unhashable
        raise ArchitectureError(
            f"family: got {family!r}, expected one of {', '.join(FAMILIES)}")
    return FAMILIES[family].from_dict(data)


def load_architecture(path: str | os.PathLike) -> tuple[ArchLike, dict[str, Any] | None]:
    """Read an architecture file; returns the value and its ``provenance`` object if present."""
    data = read_json_file(path, what="architecture")
    provenance = None
    if isinstance(data, dict) and "provenance" in data:
        data = dict(data)  # never mutate what we were given
        provenance = data.pop("provenance")
        if not isinstance(provenance, dict):
            raise ArchitectureError(f"{path}: provenance: got {json_kind(provenance)}, expected "
                                    "a JSON object (or no provenance key)")
    try:
        return architecture_from_dict(data), provenance
    except ArchitectureError as exc:
        raise ArchitectureError(f"{path}: {exc}") from None


def save_architecture(arch: ArchLike, path: str | os.PathLike, *,
                      provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``arch`` (and optional provenance) as indented JSON; returns the object written."""
    data = arch.to_dict()
    if provenance is not None:
        data["provenance"] = provenance
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return data


def resolve_architecture(spec: str) -> ArchLike:
    """A registered model name (``ghostnet_100``) or the path of an architecture JSON file."""
    if spec in list_models():
        return create_architecture(spec)
    if spec.endswith(".json") or os.sep in spec or Path(spec).exists():
        return load_architecture(spec)[0]
    raise ArchitectureError(
        f"{spec!r} is neither a registered model ({', '.join(list_models())}) "
        "nor an architecture JSON file")
