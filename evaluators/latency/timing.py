"""The timing engine: timed runs with an adaptive stop, and the state every measurement shares.

Each run is timed on its own: ``time.perf_counter_ns`` on CPU; CUDA events around the call and
a synchronise after it on CUDA. With ``repeats=None`` runs continue until the median's
distribution-free 95% confidence interval is within ``target_rel_ci`` of it, or a time cap is
reached, whichever comes first. On CPU each run may be paired with runs of a fixed reference
block whose slowdown scales the run's time (drift correction: see
:mod:`evaluators.latency.measure`).

Timings on a machine busy with other work are slower and noisier. Every measurement therefore
holds a machine-wide lock (:func:`measurement_lock`: ``fcntl.flock`` on
``ghostnas-latency.lock`` in the temp directory, or the file named by
``$GHOSTNAS_LATENCY_LOCK``), so that two GhostNAS measurements never overlap. The lock cannot
keep other programs off the machine: the search measures only when no trial is training, or
predicts instead. glibc's malloc is set to keep activation buffers between runs
(:func:`steady_allocator`), so that a network's latency does not depend on what the process ran
before it.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

from evaluators.latency.errors import LatencyError

__all__ = ["LOCK_ENV", "WARMUP", "MIN_REPEATS", "MAX_REPEATS", "MAX_TIME_S", "PART_TIME_S",
           "TARGET_REL_CI", "Timing", "check_timing", "load_1m", "lock_path",
           "measurement_lock", "median_rel_ci", "steady_allocator", "intra_op_threads",
           "time_runs"]

LOCK_ENV = "GHOSTNAS_LATENCY_LOCK"

# Default timing settings. A whole network's run is slow enough that a 1 s cap gives tens of
# timed runs, enough for a +-2% interval on a quiet machine; a table's parts are one block each,
# far faster, so a shorter cap still gives hundreds.
WARMUP = 5
MIN_REPEATS = 7  # with 7 runs the median's 95% interval is the [min, max] of the runs
MAX_TIME_S = 1.0
PART_TIME_S = 0.2
TARGET_REL_CI = 0.02
MAX_REPEATS = 10_000


def check_timing(*, warmup: int, repeats: int | None, max_time_s: float,
                 target_rel_ci: float) -> None:
    """Refuse (:class:`LatencyError`, naming the option) timing settings that cannot run."""
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise LatencyError(f"warmup: got {warmup!r}, expected an integer >= 0")
    if repeats is not None and (not isinstance(repeats, int) or isinstance(repeats, bool)
                                or repeats < 1):
        raise LatencyError(f"repeats: got {repeats!r}, expected an integer >= 1 or None (adaptive)")
    if not (isinstance(max_time_s, (int, float)) and max_time_s > 0):
        raise LatencyError(f"max_time_s: got {max_time_s!r}, expected a positive number")
    if not (isinstance(target_rel_ci, (int, float)) and target_rel_ci > 0):
        raise LatencyError(f"target_rel_ci: got {target_rel_ci!r}, expected a positive number")


# ---------------------------------------------------------------------------------------------
# The process and the machine

_GLIBC_M_TRIM_THRESHOLD, _GLIBC_M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_allocator = {"steady": None}


def steady_allocator() -> bool:
    """Make glibc's malloc keep activation buffers between runs; True if it applies here.

    By default glibc maps each large buffer afresh (and returns freed heap to the system) until
    its thresholds adapt to the largest buffer freed so far, so a network's run pays thousands
    of page faults or none depending on which networks the process has run, which moves the
    same network's latency a long way (and further under gVisor). This sets the mmap
    threshold to its maximum (32 MiB: the value glibc adapts to by itself after one large free)
    and the trim threshold to 512 MiB, for the rest of the process, so that every measurement
    sees the same steady state, that of a long-running inference process. No effect outside
    glibc (jemalloc, tcmalloc and other systems keep buffers anyway).
    """
    if _allocator["steady"] is None:
        ok = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                import ctypes

                mallopt = ctypes.CDLL(None).mallopt
                ok = bool(mallopt(_GLIBC_M_MMAP_THRESHOLD, 32 << 20)
                          and mallopt(_GLIBC_M_TRIM_THRESHOLD, 512 << 20))
            except (OSError, AttributeError):
                ok = False
        _allocator["steady"] = ok
    return _allocator["steady"]


def load_1m() -> float | None:
    """The 1-minute load average, rounded (None where the system does not say)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads (``torch.set_num_threads``), restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# The machine-wide lock


def lock_path() -> Path:
    """The lock file: ``$GHOSTNAS_LATENCY_LOCK`` or ``<tempdir>/ghostnas-latency.lock``."""
    return Path(os.environ.get(LOCK_ENV) or Path(tempfile.gettempdir()) / "ghostnas-latency.lock")


_THREAD_LOCK = threading.RLock()  # threads of one process take turns; flock is per open file
_held = {"depth": 0, "fd": -1}


def _open_lock_file(path: Path) -> int:
    flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, os.O_RDWR | flags, 0o666)
    except PermissionError:  # another user's lock file: flock works read-only
        return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))


def _wait_for_lock(fcntl: Any, fd: int, path: Path, timeout_s: float | None) -> None:
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LatencyError(
                    f"waited {timeout_s:g} s for the latency lock {str(path)!r}; another "
                    "GhostNAS process is measuring (or hung while holding it)") from None
            time.sleep(0.05)


@contextlib.contextmanager
def measurement_lock(*, timeout_s: float | None = None) -> Iterator[bool]:
    """Hold the machine-wide latency lock; re-entrant within a process.

    Yields whether the lock is really held (False only where ``fcntl`` does not exist, i.e.
    Windows). Waits as long as another process holds it (the kernel releases a dead process's
    lock), or raises :class:`LatencyError` after ``timeout_s`` seconds if one is given.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: serialise the threads of this process only
        with _THREAD_LOCK:
            yield False
        return
    with _THREAD_LOCK:
        if _held["depth"] == 0:
            path = lock_path()
            fd = _open_lock_file(path)
            _wait_for_lock(fcntl, fd, path, timeout_s)
            _held["fd"] = fd
        _held["depth"] += 1
        try:
            yield True
        finally:
            _held["depth"] -= 1
            if _held["depth"] == 0:
                fcntl.flock(_held["fd"], fcntl.LOCK_UN)
                os.close(_held["fd"])
                _held["fd"] = -1


# ---------------------------------------------------------------------------------------------
# Timed runs


class Timing(NamedTuple):
    samples_ms: list[float]  # corrected when there is a reference (raw_ms: the uncorrected ones)
    converged: bool
    cpu_ms: list[float]  # the measuring thread's CPU time per run, if asked for
    raw_ms: list[float]  # uncorrected times when a reference was run, else empty


def median_rel_ci(samples: list[float]) -> float:
    """Half-width of the distribution-free 95% CI of the median (order statistics) / median."""
    s = sorted(samples)
    n = len(s)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half))
    med = statistics.median(s)
    return (s[hi] - s[lo]) / (2 * med) if med > 0 else math.inf


def _timed_cpu_run(fn: Callable[[], Any], cpu_clock: bool, cpu: list[float], raw: list[float],
                   reference: tuple[Callable[[], Any], float] | None) -> float:
    """One CPU run of ``fn`` in ms, scaled by the reference's slowdown if there is one."""
    if reference is not None:
        reference[0]()  # warms the caches: the timed run below is a warm one
        t0 = time.perf_counter_ns()
        reference[0]()
        ref_ns = time.perf_counter_ns() - t0
    c0 = time.thread_time_ns() if cpu_clock else 0
    t0 = time.perf_counter_ns()
    fn()
    t_ms = (time.perf_counter_ns() - t0) / 1e6
    if cpu_clock:
        cpu.append((time.thread_time_ns() - c0) / 1e6)
    if reference is not None:
        raw.append(t_ms)
        t_ms *= reference[1] / (max(ref_ns, 1) / 1e6)
    return t_ms


def time_runs(fn: Callable[[], Any], *, device: str, warmup: int, repeats: int | None,
              max_time_s: float, target_rel_ci: float, cpu_clock: bool = False,
              reference: tuple[Callable[[], Any], float] | None = None) -> Timing:
    """Time ``fn`` run after run; fixed ``repeats``, or adaptive (see the module docstring).

    ``reference`` = (reference block's run, its undisturbed ms): each run of ``fn`` is preceded
    by two runs of the reference, the second timed, and the sample is ``fn``'s time scaled by
    the machine's slowdown in that pair (CPU only).
    """
    cuda = device == "cuda"
    for _ in range(warmup):
        if reference is not None:
            reference[0]()
            reference[0]()
        fn()
    if cuda:
        torch.cuda.synchronize()
        start_ev = torch.cuda.Event(enable_timing=True)
        end_ev = torch.cuda.Event(enable_timing=True)
    samples: list[float] = []
    raw: list[float] = []
    cpu: list[float] = []
    deadline = time.perf_counter() + max_time_s
    next_check = MIN_REPEATS
    converged = False
    while True:
        if cuda:
            start_ev.record()
            fn()
            end_ev.record()
            end_ev.synchronize()
            samples.append(start_ev.elapsed_time(end_ev))
        else:
            samples.append(_timed_cpu_run(fn, cpu_clock, cpu, raw, reference))
        n = len(samples)
        if repeats is not None:
            if n >= repeats:
                break
            continue
        if n < MIN_REPEATS:
            continue
        if n >= next_check:
            if median_rel_ci(samples) <= target_rel_ci:
                converged = True
                break
            next_check = n + max(1, n // 8)  # sorting every run would cost O(n^2 log n)
        if time.perf_counter() >= deadline or n >= MAX_REPEATS:
            break
    return Timing(samples, converged, cpu, raw)
