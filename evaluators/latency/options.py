"""What a latency is measured for: device (and its name), threads, batch, dtype, resolution.

A measurement and a table are valid only for these settings, so they are checked here once,
for :func:`~evaluators.latency.measure.measure_latency`, for building a table and for
:meth:`~evaluators.latency.table.TableSettings.here`.
"""

from __future__ import annotations

import functools
import platform

import torch

from evaluators.device import available_cpus
from evaluators.latency.errors import LatencyError

__all__ = ["DTYPES", "MAX_BATCH", "MAX_RESOLUTION", "check_options", "device_name"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}
# Upper bounds of the measurement options, past any classifier's deployment: a mistyped
# --resolution 99999 would otherwise ask for ~120 GB before it failed.
MAX_BATCH = 1024
MAX_RESOLUTION = 2048


@functools.cache
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "processor\t: ")):
                    name = line.split(":", 1)[1].strip()
                    if name and not name.isdigit():
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str = "cpu") -> str:
    """The CPU model (``/proc/cpuinfo``, else ``platform``) or the CUDA device's name."""
    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return _cpu_name()


def check_options(*, device: str, threads: int, batch: int, dtype: str, resolution: int) -> None:
    """Refuse (:class:`LatencyError`, naming the option) settings this machine cannot measure."""
    if device not in ("cpu", "cuda"):
        raise LatencyError(f"device: got {device!r}, expected 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise LatencyError(
            f"device 'cuda': CUDA is not available to this PyTorch ({torch.__version__}); "
            "use device 'cpu' or install a CUDA build of PyTorch")
    cpus = available_cpus()
    for name, value, low, high, why in (
            ("threads", threads, 1, cpus, "the CPUs this process may use on this machine"),
            ("batch", batch, 1, MAX_BATCH, "a deployment batch"),
            ("resolution", resolution, 8, MAX_RESOLUTION, "a deployment input side")):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise LatencyError(f"{name}: got {value!r}, expected an integer >= {low}")
        if value > high:
            raise LatencyError(f"{name}: got {value}, expected at most {high} ({why})")
    if dtype not in DTYPES:
        raise LatencyError(f"dtype: got {dtype!r}, expected one of {', '.join(DTYPES)}")
