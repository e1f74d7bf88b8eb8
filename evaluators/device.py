"""Where evaluations run: the CPUs this process may use and the torch device a setting names."""

from __future__ import annotations

import os

import torch

from space.checks import UserError

__all__ = ["DeviceError", "available_cpus", "resolve_device"]


class DeviceError(UserError):
    """A device setting this machine cannot honour (CUDA asked for, none available)."""


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: what a container's cpuset or
    ``taskset`` allows), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU) or a torch device string, checked to exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device: got {device!r}, but CUDA is not available to this PyTorch "
                          "here; use 'cpu' (or 'auto'), or install a CUDA build of PyTorch")
    return dev
