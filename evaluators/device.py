"""Where evaluations run: the CPUs this process may use and the torch device a setting names."""

from __future__ import annotations

import os

import torch

from space.checks import UserError

__all__ = ["DeviceError", "available_cpus", "loader_workers", "resolve_device"]

_MAX_LOADER_WORKERS = 8  # decoding processes per trainer; more mostly contend for the disk


class DeviceError(UserError):
    """A device setting this machine cannot honour (CUDA asked for, none available)."""


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: what a container's cpuset or
    ``taskset`` allows), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loader_workers(*, trainers: int = 1) -> int:
    """DataLoader processes for each of ``trainers`` training processes on this machine: the
    CPUs left after the trainers, shared among them, at least one and at most eight."""
    spare = available_cpus() - trainers
    return max(1, min(_MAX_LOADER_WORKERS, spare // max(1, trainers)))


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU) or a torch device string, checked to exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device: got {device!r}, but CUDA is not available to this PyTorch "
                          "here; use 'cpu' (or 'auto'), or install a CUDA build of PyTorch")
    return dev
