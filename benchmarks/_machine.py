"""The machine a benchmark ran on, for its JSON record, and the lock that keeps benchmarks
from timing themselves next to each other."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_ENV = "GHOSTNAS_BENCHMARK_LOCK"


def machine() -> dict:
    import torch

    from evaluators.latency import device_name

    info = {"cpu": device_name("cpu"), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@contextlib.contextmanager
def benchmark_lock() -> Iterator[None]:
    """Hold the machine-wide benchmark lock (``$GHOSTNAS_BENCHMARK_LOCK``, else
    ``ghostnas-benchmark.lock`` in the temp folder) for a measured step, waiting for another
    benchmark's step to end: timings taken next to another benchmark measure the sharing."""
    path = Path(os.environ.get(LOCK_ENV) or Path(tempfile.gettempdir()) / "ghostnas-benchmark.lock")
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another benchmark to release {path} ...", file=sys.stderr,
                  flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
