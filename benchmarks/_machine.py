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


def _lock_path() -> Path:
    return Path(os.environ.get(LOCK_ENV)
                or Path(tempfile.gettempdir()) / "ghostnas-benchmark.lock")


@contextlib.contextmanager
def benchmark_lock() -> Iterator[None]:
    """Hold the machine-wide benchmark lock (``$GHOSTNAS_BENCHMARK_LOCK``, else
    ``ghostnas-benchmark.lock`` in the temp folder) for a measured step, waiting for another
    benchmark's step to end: timings taken next to another benchmark measure the sharing.
    While it waits, a marker file beside the lock tells the holder (:func:`lock_wanted`)."""
    path = _lock_path()
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another benchmark to release {path} ...", file=sys.stderr,
                  flush=True)
            marker = path.with_name(f"{path.name}.waiting.{os.getpid()}")
            marker.touch()
            try:
                fcntl.flock(fh, fcntl.LOCK_EX)
            finally:
                marker.unlink(missing_ok=True)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_wanted() -> bool:
    """Whether another live process waits for the benchmark lock: a holder that could go on
    lets it have its turn instead (markers of processes that died are ignored)."""
    path = _lock_path()
    for marker in path.parent.glob(f"{path.name}.waiting.*"):
        try:
            os.kill(int(marker.name.rsplit(".", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            continue
        except PermissionError:  # alive, another user's
            pass
        return True
    return False
