"""Checkpoints of a from-scratch training: writing, reading untrusted files, and the checks that
a checkpoint may be resumed with the given architecture, data and settings.

``checkpoint.pt`` in the output folder is replaced atomically after every epoch. It holds the
model, optimizer, scheduler (and fp16 scaler) states, the RNG states, the epoch, the history,
the architecture and the configuration, all as tensors and plain data, and is read back with
``torch.load(weights_only=True)`` only, so a crafted file cannot run code.

Format version 2 adds ``workers`` (the data-parallel processes that wrote it; a data-parallel
run's RNG states are its first worker's) and ``ema`` (the averaged weights, or None). Version 1
files still load, as written by one process without an average.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluators.data import FolderFiles, ImageData
from evaluators.scratch.config import TrainConfig
from evaluators.training import ConfigError
from space import ArchitectureError, UserError, architecture_from_dict
from space.checks import one_line
from space.io import atomic_write

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "check_resume", "data_info", "load_checkpoint",
           "model_from_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "ghostnas-train-checkpoint"
_VERSION = 2
_READS = (1, 2)  # the versions this code loads
_KEYS = ("format", "version", "epoch", "model", "optimizer", "scheduler", "scaler", "rng",
         "arch", "config", "data", "history", "train_seconds", "images")
_V2_KEYS = {"workers": 1, "ema": None}  # added in version 2, with what a version 1 file means
# Settings that may differ when resuming: how long, and where/how fast it runs.
_RESUMABLE_CHANGES = ("epochs", "device", "threads", "eval_batch_size", "workers", "sync_bn")


class CheckpointError(UserError):
    """A checkpoint that cannot be read, is not ours, or does not match what is resumed."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (every key of the format but ``format`` and ``version``) atomically: a
    kill mid-write leaves the previous checkpoint intact."""
    keys = {*_KEYS[2:], *_V2_KEYS}
    assert set(state) == keys, sorted(set(state) ^ keys)
    checkpoint = {"format": _FORMAT, "version": _VERSION, **state}
    atomic_write(path, lambda fh: torch.save(checkpoint, fh))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, as tensors and plain data only.

    ``torch.load(weights_only=True)`` refuses any other object (a pickled function or class,
    which could run code) before creating it; that, a file that is not a checkpoint, and one
    from another program all raise :class:`CheckpointError` with one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it references {found.group(1)}" if found else one_line(
            str(exc).split("WeightsUnpickler error:")[-1], 120)
        raise CheckpointError(
            f"refused to load checkpoint {str(path)!r}: {what}; a checkpoint of 'search train' "
            "holds only tensors and plain data (the file is corrupt, from another program, or "
            "malicious)") from None
    except Exception as exc:  # not a zip, truncated, ...: RuntimeError, EOFError, OSError
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: not a PyTorch checkpoint "
                              f"or truncated ({type(exc).__name__}: {one_line(exc, 160)})"
                              ) from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a 'search train' checkpoint "
                              "(a plain state_dict or another program's file)")
    if state.get("version") not in _READS:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version "
                              f"{state.get('version')!r}; this GhostNAS reads versions "
                              f"{', '.join(map(str, _READS))}")
    required = list(_KEYS) + (list(_V2_KEYS) if state["version"] >= 2 else [])
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}; it is "
                              "damaged")
    return {**_V2_KEYS, **state}


def _checkpoint_parts(state: dict[str, Any], path: Path) -> tuple[Any, TrainConfig]:
    try:
        return architecture_from_dict(state["arch"]), TrainConfig.from_dict(state["config"])
    except (ArchitectureError, ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {one_line(exc, 300)}") from None


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a checkpoint (CPU, eval mode) and the checkpoint's contents: the
    averaged weights when the run kept an average (those were evaluated), else the weights."""
    path = Path(path)
    state = load_checkpoint(path)
    arch, config = _checkpoint_parts(state, path)
    model = arch.build(stem_stride=config.stem_stride or 2)
    try:
        model.load_state_dict(state["model"] if state["ema"] is None
                              else state["ema"]["weights"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: weights do not fit its architecture "
                              f"({one_line(exc, 160)})") from None
    return model.eval(), state


def data_info(data: ImageData | FolderFiles) -> dict[str, Any]:
    """What a resumed run's data must match."""
    split, eval_x, _ = data.held_out()
    return {"dataset": data.name, "train_images": len(data.train_y), "held_out": split,
            "held_out_images": len(eval_x), "num_classes": data.num_classes,
            "image_size": list(data.image_size)}


def _check_resumable(state: dict[str, Any], path: Path, arch: Any, config: TrainConfig,
                     data: dict[str, Any]) -> None:
    old_arch, old_config = _checkpoint_parts(state, path)
    if old_arch != arch:
        raise CheckpointError(f"cannot resume from {str(path)!r}: it was trained from a "
                              "different architecture; give the same one, or start over")
    old, new = old_config.to_dict(), config.to_dict()
    for name in old:
        if name not in _RESUMABLE_CHANGES and old[name] != new[name]:
            raise CheckpointError(f"cannot resume from {str(path)!r}: it was trained with "
                                  f"{name}={old[name]!r}, now {name}={new[name]!r}; keep the "
                                  "same setting, or start over")
    for name, value in data.items():
        if state["data"].get(name) != value:
            raise CheckpointError(f"cannot resume from {str(path)!r}: its data had "
                                  f"{name}={state['data'].get(name)!r}, now {value!r}; use the "
                                  "same data set, subset and seed, or start over")
    if state["epoch"] >= config.epochs:
        raise CheckpointError(f"nothing to resume: {str(path)!r} is already trained to epoch "
                              f"{state['epoch']} (asked for {config.epochs} epochs); ask for "
                              "more epochs to train further")


def check_resume(out_dir: str | os.PathLike, arch: Any, data: ImageData | FolderFiles,
                 config: TrainConfig) -> dict[str, Any]:
    """The checkpoint in ``out_dir`` if :func:`~evaluators.scratch.train_from_scratch` can
    resume it with these arguments; else :class:`CheckpointError` saying what differs. Lets a
    caller refuse before it changes anything."""
    arch = dataclasses.replace(arch, num_classes=data.num_classes)
    config = config.resolve(data)
    path = Path(out_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path)
    _check_resumable(state, path, arch, config, data_info(data))
    return state
