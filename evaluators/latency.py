"""Latency: measured on a device, or predicted from a per-part lookup table built on that device.

**Measured** (:func:`measure_latency`) means: the network is built, put in eval mode and run
under ``torch.inference_mode`` on a random input of the deployment shape (batch 1 by default,
3 x 224 x 224), with a fixed intra-op thread count (restored afterwards), after warm-up runs;
each run is timed on its own (``time.perf_counter_ns`` on CPU; CUDA events around the call and a
synchronise after it on CUDA) and the record keeps the median with its dispersion. By default
the number of runs adapts: runs continue until the median's distribution-free 95% confidence
interval is within +-2% of it, or a time cap (1 s) is reached, whichever comes first. glibc's
malloc is first set to keep activation buffers between runs (:func:`steady_allocator`):
otherwise the same network's latency depended on what the process had run before.

**Drift correction (CPU).** A shared machine's speed moves from one run to the next: on the
2-core cloud VM GhostNAS is developed on, a plain measurement (25 runs) of the same network came
within +-10% of that network's median measurement in only 41-53% of measurements
(``benchmarks/latency_drift.py``), and in one predictor benchmark the first 20 networks
measured 1.08-1.73x (median 1.51x) slower than a few minutes earlier
(``benchmarks/results/latency_before_drift_correction.json``). So on CPU each timed run is
paired with a timed run of a fixed *reference block* (``REFERENCE_PART``: a Ghost bottleneck with
SE at 28 x 28, ~0.6 ms), run twice just before it and timed the second time (a first run after a
large network is slower from cold caches, which would make the reference depend on what ran
before it). A run's corrected time is ``its time * reference_ms / the reference's time in its
pair``, and the measurement is the median of those. ``reference_ms`` is the reference block's
time on the undisturbed machine in the same setting: the 10th percentile of its paired runs next
to GhostNet 0.5x for 1.5 s, once per process (:func:`reference_latency`), or the one a latency
table was built with, so that a table and the measurements compared with it share one unit.
Corrected, 98-100% of the measurements came within +-10%. Two caveats, from the same benchmark
on a busy VM: the corrected figure lay at 0.83-0.88x the fastest plain run (the correction can
overshoot when the noise slows the small reference more than a network), and the reference time
of fresh processes varied by up to 24%, so absolute figures from different processes (not those
in one table or one search's latency phase) can differ by that much. The record keeps the
uncorrected median (``raw_ms``); ``drift_correction=False`` turns the correction off; on CUDA it
does not apply (CUDA events time the GPU alone).

Timings on a machine that is busy with other work are slower and noisier. Every measurement
therefore holds a machine-wide lock (``fcntl.flock`` on ``ghostnas-latency.lock`` in the temp
directory, or the file named by ``$GHOSTNAS_LATENCY_LOCK``), so two GhostNAS measurements never
overlap; the record says it was taken under the lock, what the 1-minute load average was when
it started, and (CPU, one thread) the measuring thread's CPU time, which falls below the wall
time when other processes took the core. The lock cannot keep other programs off the machine:
the search measures only when no trial is training, or predicts instead.

**Predicted** (:class:`LatencyTable`): a network is cut into parts, each a standalone module
with its own input shape: the stem, every block, and the tail (final 1x1 conv, pooling, head and
classifier). A part's key holds everything that changes its cost: for a Ghost bottleneck the
input side, cin, mid (#exp), cout, k, s, d, stride and SE; for a MobileNetV3 inverted residual
the input side, cin, exp, cout, k, stride, SE and activation. :func:`build_table` measures the
unique parts of a set of architectures on the target device, and the whole networks too.
Prediction = ``scale * (sum of the parts' latencies) + offset_ms``; the calibration pair is
fitted on the whole-network measurements, because eager PyTorch's sum of parts misses the
per-network overhead and the colder caches of a part running inside a network.

The default search space has far too many part keys to enumerate (widths x channel choices x
s x d x k x SE per position), so a table cannot hold every part a search meets. A part missing
from the table is predicted by a per-part-type linear model fitted on the table's entries, with
non-negative coefficients over analytic features (``FEATURES``: operator count, MACs of dense,
depthwise and grouped convolutions, group counts of the grouped ones, elements written); the
Ghost module's cheap operation leaves PyTorch's fast depthwise kernel when s > 2 or d = 1, so
those are separate features. :meth:`LatencyTable.explain` says which parts came from that
fallback. A table is valid only for the settings it was built with
(device and its name, threads, batch, dtype, resolution); :meth:`LatencyTable.check` refuses
others with a message naming both.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from evaluators.device import available_cpus
from space import Architecture, MobileNetV3Arch, UserError, make_divisible
from space.checks import ArchitectureError, check_keys
from space.ghostnet import CHANNEL_DIVISOR, SE_RATIO, BlockPlan, ConvBnAct, GhostBottleneck
from space.io import MAX_JSON_BYTES, architecture_from_dict, read_json_file
from space.layers import PooledConv
from space.mobilenetv3 import CHANNEL_DIVISOR as MB_DIVISOR
from space.mobilenetv3 import MBPlan, _conv_bn_act, _InvertedResidual

__all__ = [
    "LatencyError", "LatencyTableError", "LatencyTableMismatch", "LatencyRecord",
    "measure_latency", "measurement_lock", "lock_path", "device_name", "Part", "parts",
    "part_module", "TableSettings", "Calibration", "NetworkTiming", "Prediction", "BuildProgress",
    "LatencyTable", "build_table", "DTYPES", "PART_FIELDS", "FEATURES", "TABLE_FORMAT",
    "TABLE_VERSION", "LOCK_ENV", "steady_allocator", "reference_latency", "REFERENCE_PART",
]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}
LOCK_ENV = "GHOSTNAS_LATENCY_LOCK"
# Upper bounds of the measurement options, past any classifier's deployment: a mistyped
# --resolution 99999 would otherwise ask for ~120 GB before it failed.
MAX_BATCH = 1024
MAX_RESOLUTION = 2048

# Default measurement settings (see the module docstring). A GhostNet at 224 takes 10-30 ms per
# run on one CPU thread: 1 s gives 30-100 timed runs, enough for a +-2% interval on a quiet
# machine. Parts of a table take 0.02-3 ms each, so 0.2 s gives hundreds of runs.
WARMUP = 5
MIN_REPEATS = 7  # with 7 runs the median's 95% interval is the [min, max] of the runs
MAX_TIME_S = 1.0
PART_TIME_S = 0.2
TARGET_REL_CI = 0.02
MAX_REPEATS = 10_000
REFERENCE_TIME_S = 1.5  # paired runs of the reference block that set reference_ms
REFERENCE_QUANTILE = 0.10  # reference_ms = this quantile of them: the undisturbed machine


class LatencyError(UserError):
    """A latency option or device the user asked for cannot be honoured."""


class LatencyTableError(LatencyError):
    """A latency-table file that cannot be read, or a table that cannot predict an architecture."""


class LatencyTableMismatch(LatencyTableError):
    """A table built for other settings (device, threads, batch, dtype, resolution) than asked."""


# ---------------------------------------------------------------------------------------------
# The machine


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


def _check_options(*, device: str, threads: int, batch: int, dtype: str, resolution: int) -> None:
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


_GLIBC_M_TRIM_THRESHOLD, _GLIBC_M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_allocator = {"steady": None}


def steady_allocator() -> bool:
    """Make glibc's malloc keep activation buffers between runs; True if it applies here.

    By default glibc maps each large buffer afresh (and returns freed heap to the system) until
    its thresholds adapt to the largest buffer freed so far, so a network's run paid thousands of
    page faults or none depending on which networks the process had run before: up to 1.7x in
    latency on the same network (and worse under gVisor). This sets the mmap threshold to its
    maximum (32 MiB: the value glibc adapts to by itself after one large free) and the trim
    threshold to 512 MiB, for the rest of the process, so that every measurement sees the same
    steady state, that of a long-running inference process. No effect outside glibc (jemalloc,
    tcmalloc and other systems keep buffers anyway).
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


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------------------------
# The machine-wide lock


def lock_path() -> Path:
    """The lock file: ``$GHOSTNAS_LATENCY_LOCK`` or ``<tempdir>/ghostnas-latency.lock``."""
    return Path(os.environ.get(LOCK_ENV) or Path(tempfile.gettempdir()) / "ghostnas-latency.lock")


_THREAD_LOCK = threading.RLock()  # threads of one process take turns; flock is per open file
_held = {"depth": 0, "fd": -1}


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
            flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(path, os.O_RDWR | flags, 0o666)
            except PermissionError:  # another user's lock file: flock works read-only
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise LatencyError(
                            f"waited {timeout_s:g} s for the latency lock {str(path)!r}; another "
                            "GhostNAS process is measuring (or hung while holding it)") from None
                    time.sleep(0.05)
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
# Measurement


@dataclass(frozen=True)
class LatencyRecord:
    """One measurement; times in milliseconds, over the timed runs (warm-up excluded)."""

    latency_ms: float  # median
    iqr_ms: float  # interquartile range (p75 - p25)
    p90_ms: float
    min_ms: float
    rel_ci: float  # half-width of the median's 95% confidence interval / median
    repeats: int  # timed runs
    warmup: int  # untimed runs before them
    converged: bool  # rel_ci reached the target (False: stopped by the time cap or fixed repeats)
    device: str  # "cpu" or "cuda"
    device_name: str  # CPU model or GPU name
    threads: int  # intra-op threads (torch.set_num_threads)
    batch: int
    dtype: str
    resolution: int
    torch_version: str
    locked: bool  # taken under the machine-wide latency lock
    load_1m: float | None  # 1-minute load average when the measurement started (None: unknown)
    # Median CPU time of the measuring thread per run (CPU with 1 thread only, else None). Well
    # below latency_ms means the thread was waiting for a core: other processes were running.
    cpu_ms: float | None
    # Drift correction (CPU): the uncorrected median, and the reference block's undisturbed time
    # that latency_ms is expressed against (None: not corrected; see the module docstring).
    raw_ms: float | None = None
    reference_ms: float | None = None
    method: str = "measured"

    @property
    def rel_iqr(self) -> float:
        """Relative spread of the runs: IQR / median."""
        return self.iqr_ms / self.latency_ms

    @property
    def source(self) -> str:
        """For a results table's ``latency_source`` column."""
        return (f"measured on {self.device_name} ({self.device}, {self.threads} thread"
                f"{'s' if self.threads != 1 else ''}, batch {self.batch}, {self.dtype}, "
                f"{self.resolution}px{', drift-corrected' if self.reference_ms else ''})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Timing(NamedTuple):
    samples_ms: list[float]  # corrected when there is a reference (raw_ms: the uncorrected ones)
    converged: bool
    cpu_ms: list[float]  # the measuring thread's CPU time per run, if asked for
    raw_ms: list[float]  # uncorrected times when a reference was run, else empty


def _median_rel_ci(samples: list[float]) -> float:
    """Half-width of the distribution-free 95% CI of the median (order statistics) / median."""
    s = sorted(samples)
    n = len(s)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half))
    med = statistics.median(s)
    return (s[hi] - s[lo]) / (2 * med) if med > 0 else math.inf


def _time_runs(fn: Callable[[], Any], *, device: str, warmup: int, repeats: int | None,
               max_time_s: float, target_rel_ci: float, cpu_clock: bool = False,
               reference: tuple[Callable[[], Any], float] | None = None) -> _Timing:
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
            samples.append(t_ms)
        n = len(samples)
        if repeats is not None:
            if n >= repeats:
                break
            continue
        if n < MIN_REPEATS:
            continue
        if n >= next_check:
            if _median_rel_ci(samples) <= target_rel_ci:
                converged = True
                break
            next_check = n + max(1, n // 8)  # sorting every run would cost O(n^2 log n)
        if time.perf_counter() >= deadline or n >= MAX_REPEATS:
            break
    return _Timing(samples, converged, cpu, raw)


@functools.cache
def _reference_run(dtype: str) -> Callable[[], Any]:
    """One CPU inference run of the reference block (fixed weights), as a closure."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = part_module(REFERENCE_PART).to(dtype=DTYPES[dtype]).eval()
        side = REFERENCE_PART.field("side")
        x = torch.randn(1, _part_input_channels(REFERENCE_PART), side, side, dtype=DTYPES[dtype])

    def run() -> Any:
        with torch.inference_mode():
            return module(x)

    return run


def reference_latency(*, threads: int = 1, dtype: str = "float32") -> float:
    """The reference block's undisturbed CPU time in ms with ``threads`` threads, in this process.

    Measured once per process and setting, under the latency lock: the reference paired with
    GhostNet 0.5x at 224 exactly as in a measurement (two runs, the second timed, then the
    network), for ``REFERENCE_TIME_S``; the ``REFERENCE_QUANTILE`` of its timed runs.
    """
    _check_options(device="cpu", threads=threads, batch=1, dtype=dtype, resolution=224)
    return _reference_ms(threads, dtype)


@functools.cache  # positional arguments only: one cache entry per (threads, dtype)
def _reference_ms(threads: int, dtype: str) -> float:
    from space.registry import create_architecture

    run = _reference_run(dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        context = create_architecture("ghostnet_050").build().to(dtype=DTYPES[dtype]).eval()
        x = torch.randn(1, 3, 224, 224, dtype=DTYPES[dtype])
    steady_allocator()
    samples: list[float] = []
    with measurement_lock(), _threads(threads), torch.inference_mode():
        for _ in range(WARMUP):
            run()
            run()
            context(x)
        deadline = time.perf_counter() + REFERENCE_TIME_S
        while time.perf_counter() < deadline or len(samples) < MIN_REPEATS:
            run()
            t0 = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            context(x)
    samples.sort()
    return samples[int(REFERENCE_QUANTILE * (len(samples) - 1))]


def _reference_for(device: str, threads: int, dtype: str, drift_correction: bool,
                   reference_ms: float | None) -> tuple[Callable[[], Any], float] | None:
    """The (run, undisturbed ms) pair a CPU measurement is corrected against, or None."""
    if device != "cpu" or not drift_correction:
        return None
    if reference_ms is None:
        reference_ms = reference_latency(threads=threads, dtype=dtype)
    elif not (isinstance(reference_ms, (int, float)) and math.isfinite(reference_ms)
              and reference_ms > 0):
        raise LatencyError(f"reference_ms: got {reference_ms!r}, expected a positive number")
    return _reference_run(dtype), float(reference_ms)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_timing(*, warmup: int, repeats: int | None, max_time_s: float,
                  target_rel_ci: float) -> None:
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise LatencyError(f"warmup: got {warmup!r}, expected an integer >= 0")
    if repeats is not None and (not isinstance(repeats, int) or isinstance(repeats, bool)
                                or repeats < 1):
        raise LatencyError(f"repeats: got {repeats!r}, expected an integer >= 1 or None (adaptive)")
    if not (isinstance(max_time_s, (int, float)) and max_time_s > 0):
        raise LatencyError(f"max_time_s: got {max_time_s!r}, expected a positive number")
    if not (isinstance(target_rel_ci, (int, float)) and target_rel_ci > 0):
        raise LatencyError(f"target_rel_ci: got {target_rel_ci!r}, expected a positive number")


def _record(timing: _Timing, *, warmup: int, device: str, threads: int, batch: int, dtype: str,
            resolution: int, locked: bool, load_1m: float | None,
            reference_ms: float | None = None) -> LatencyRecord:
    s = sorted(timing.samples_ms)
    q = statistics.quantiles(s, n=20, method="inclusive") if len(s) > 1 else [s[0]] * 19
    return LatencyRecord(
        latency_ms=statistics.median(s), iqr_ms=q[14] - q[4], p90_ms=q[17], min_ms=s[0],
        rel_ci=_median_rel_ci(s), repeats=len(s), warmup=warmup, converged=timing.converged,
        device=device, device_name=device_name(device), threads=threads, batch=batch,
        dtype=dtype, resolution=resolution, torch_version=torch.__version__, locked=locked,
        load_1m=load_1m, cpu_ms=statistics.median(timing.cpu_ms) if timing.cpu_ms else None,
        raw_ms=statistics.median(timing.raw_ms) if timing.raw_ms else None,
        reference_ms=reference_ms if timing.raw_ms else None)


@contextlib.contextmanager
def _prepared(module: nn.Module, device: str, dtype: str) -> Iterator[nn.Module]:
    """``module`` in eval mode on ``device``/``dtype``; the caller's module is left as it was
    (moved as a copy if needed, training flag restored)."""
    import copy

    want = (torch.device(device), DTYPES[dtype])
    first = next(iter(module.parameters()), None)
    if first is not None and (first.device.type, first.dtype) != (want[0].type, want[1]):
        module = copy.deepcopy(module).to(device=want[0], dtype=want[1])
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def measure_latency(model_or_arch: nn.Module | Architecture | MobileNetV3Arch, *,
                    resolution: int = 224, batch: int = 1, device: str = "cpu", threads: int = 1,
                    warmup: int = WARMUP, repeats: int | None = None,
                    max_time_s: float = MAX_TIME_S, target_rel_ci: float = TARGET_REL_CI,
                    dtype: str = "float32", lock: bool = True, drift_correction: bool = True,
                    reference_ms: float | None = None) -> LatencyRecord:
    """Measure batch-``batch`` inference latency of a network (see the module docstring).

    ``model_or_arch``: an architecture value (built with the deployment stem stride 2) or a
    module taking ``(batch, 3, resolution, resolution)``; a module is not modified.
    ``repeats=None`` adapts the number of timed runs (at least 7; until the median's 95% CI is
    within ``target_rel_ci`` of it, or ``max_time_s`` of timed runs); an integer fixes it.
    ``lock=False`` skips the machine-wide lock (the record then says ``locked=False``).
    On CPU the runs are drift-corrected against the reference block (module docstring), whose
    undisturbed time is ``reference_ms`` if given (a table's), else :func:`reference_latency`;
    ``drift_correction=False`` reports plain times.
    """
    _check_options(device=device, threads=threads, batch=batch, dtype=dtype, resolution=resolution)
    _check_timing(warmup=warmup, repeats=repeats, max_time_s=max_time_s,
                  target_rel_ci=target_rel_ci)
    if isinstance(model_or_arch, nn.Module):
        module = model_or_arch
    elif isinstance(model_or_arch, (Architecture, MobileNetV3Arch)):
        module = model_or_arch.build().to(device=device, dtype=DTYPES[dtype])
    else:
        raise LatencyError(f"model_or_arch: got {type(model_or_arch).__name__}, expected an "
                           "nn.Module or an architecture value")
    steady_allocator()
    reference = _reference_for(device, threads, dtype, drift_correction, reference_ms)
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=DTYPES[dtype])
    lock_cm = measurement_lock() if lock else contextlib.nullcontext(False)
    with lock_cm as locked, _threads(threads), _prepared(module, device, dtype) as m, \
            torch.inference_mode():
        load = _load_1m()
        timing = _time_runs(lambda: m(x), device=device, warmup=warmup, repeats=repeats,
                            max_time_s=max_time_s, target_rel_ci=target_rel_ci,
                            cpu_clock=device == "cpu" and threads == 1, reference=reference)
    return _record(timing, warmup=warmup, device=device, threads=threads, batch=batch,
                   dtype=dtype, resolution=resolution, locked=bool(locked), load_1m=load,
                   reference_ms=reference[1] if reference else None)


# ---------------------------------------------------------------------------------------------
# Parts: what a table's keys are, the standalone module of each, and its analytic features

PART_FIELDS: dict[str, tuple[str, ...]] = {
    # side = the part's input feature-map side in pixels
    "ghost_stem": ("side", "cout", "stride"),
    "ghost_block": ("side", "cin", "mid", "cout", "k", "s", "d", "stride", "se"),
    "ghost_tail": ("side", "cin", "final", "head", "num_classes"),
    "mbv3_stem": ("side", "cout", "stride"),
    "mbv3_block": ("side", "cin", "exp", "cout", "k", "stride", "se", "act"),
    "mbv3_tail": ("side", "cin", "last", "head", "num_classes"),
}
_BOOL_FIELDS = {"se"}
_STR_FIELDS = {"act": ("relu", "hswish")}
# Bound of a part's integer fields (and of a table's threads, batch and resolution, so that
# none overflows a float): every part of a valid architecture fits (65,536 base channels at
# width 16 are 1,048,576 channels, 6x that in MobileNetV3's last conv; 1,000,000 classes).
MAX_PART_VALUE = 1 << 23


class Part(NamedTuple):
    """A table key: the part's kind and its fields' values in ``PART_FIELDS[kind]`` order."""

    kind: str
    values: tuple

    def field(self, name: str) -> Any:
        return self.values[PART_FIELDS[self.kind].index(name)]

    def to_dict(self) -> dict[str, Any]:
        return {"part": self.kind, **dict(zip(PART_FIELDS[self.kind], self.values, strict=True))}

    @classmethod
    def from_dict(cls, data: Any, *, where: str, extra: tuple[str, ...] = ()) -> Part:
        kind = data.get("part") if isinstance(data, dict) else None
        if not isinstance(kind, str) or kind not in PART_FIELDS:  # a list is unhashable
            raise LatencyTableError(
                f"{where}.part: got {kind!r}, expected one of {', '.join(PART_FIELDS)}")
        names = PART_FIELDS[kind]
        try:
            check_keys(where, data, ("part", *names, *extra))
        except ArchitectureError as exc:
            raise LatencyTableError(str(exc)) from None
        values = []
        for name in names:
            v = data[name]
            if name in _BOOL_FIELDS:
                ok, allowed = isinstance(v, bool), "true or false"
            elif name in _STR_FIELDS:
                ok, allowed = v in _STR_FIELDS[name], f"one of {', '.join(_STR_FIELDS[name])}"
            else:
                ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PART_VALUE
                allowed = f"an integer from 1 to {MAX_PART_VALUE:,}"
            if not ok:
                raise LatencyTableError(f"{where}.{name}: got {v!r}, expected {allowed}")
            values.append(v)
        return cls(kind, tuple(values))


def _side_out(side: int, k: int, stride: int) -> int:
    return (side + 2 * (k // 2) - k) // stride + 1  # a k x k conv with padding k // 2


@functools.lru_cache(maxsize=65536)
def parts(arch: Architecture | MobileNetV3Arch, *, resolution: int = 224,
          stem_stride: int = 2) -> tuple[Part, ...]:
    """The parts of ``arch`` at ``resolution``, in network order: stem, blocks, tail."""
    out: list[Part] = []
    side = resolution
    if isinstance(arch, MobileNetV3Arch):
        stem, plans, last, head = arch.plan()
        out.append(Part("mbv3_stem", (side, stem, stem_stride)))
        side = _side_out(side, 3, stem_stride)
        for p in plans:
            out.append(Part("mbv3_block", (side, p.cin, p.exp, p.cout, p.k, p.stride, p.se,
                                           p.act)))
            side = _side_out(side, p.k, p.stride)
        out.append(Part("mbv3_tail", (side, plans[-1].cout, last, head, arch.num_classes)))
        return tuple(out)
    stem, plans, final = arch.plan()
    out.append(Part("ghost_stem", (side, stem, stem_stride)))
    side = _side_out(side, 3, stem_stride)
    for p in plans:
        out.append(Part("ghost_block", (side, p.cin, p.mid, p.cout, p.k, p.s, p.d, p.stride,
                                        p.se)))
        if p.stride > 1:
            side = _side_out(side, p.k, p.stride)
    out.append(Part("ghost_tail", (side, plans[-1].cout, final, arch.head, arch.num_classes)))
    return tuple(out)


class _GhostStem(nn.Module):
    """GhostNet's conv_stem, bn1, act1 (as in ``GhostNet.__init__``)."""

    def __init__(self, cout: int, stride: int) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))  # (N, cout, H/stride, W/stride)


class _GhostTail(nn.Module):
    """GhostNet's final ConvBnAct and ``forward_head`` (pool, conv_head, ReLU, classifier)."""

    def __init__(self, cin: int, final: int, head: int, num_classes: int) -> None:
        super().__init__()
        self.final = ConvBnAct(cin, final, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = PooledConv(final, head)
        self.act2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv_head(self.global_pool(self.final(x))))  # (N, head, 1, 1)
        return self.classifier(self.dropout(x.flatten(1)))  # (N, num_classes)


class _MBTail(nn.Module):
    """MobileNetV3's last conv and ``forward_head`` (pool, Linear, hard-swish, Linear)."""

    def __init__(self, cin: int, last: int, head: int, num_classes: int) -> None:
        super().__init__()
        self.last = _conv_bn_act(cin, last, 1, act="hswish")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last, head), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True),
            nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.last(x)).flatten(1))  # (N, num_classes)


def part_module(part: Part) -> nn.Module:
    """A standalone module of ``part``, built from the same classes as the network."""
    f = dict(zip(PART_FIELDS[part.kind], part.values, strict=True))
    if part.kind == "ghost_stem":
        return _GhostStem(f["cout"], f["stride"])
    if part.kind == "ghost_block":
        return GhostBottleneck(BlockPlan(0, 0, f["cin"], f["mid"], f["cout"], f["k"], f["s"],
                                         f["d"], f["stride"], f["se"]))
    if part.kind == "ghost_tail":
        return _GhostTail(f["cin"], f["final"], f["head"], f["num_classes"])
    if part.kind == "mbv3_stem":
        return _conv_bn_act(3, f["cout"], 3, f["stride"], act="hswish")
    if part.kind == "mbv3_block":
        return _InvertedResidual(MBPlan(0, f["cin"], f["exp"], f["cout"], f["k"], f["stride"],
                                        f["se"], f["act"]))
    return _MBTail(f["cin"], f["last"], f["head"], f["num_classes"])


def _part_input_channels(part: Part) -> int:
    return 3 if part.kind.endswith("_stem") else part.field("cin")


# The reference block of drift correction (module docstring): GhostNet 1.0x's 5th block with SE
# on (28 x 28, 40 -> 120 -> 40): dense 1x1, depthwise and SE kernels, ~0.6 ms on one thread.
REFERENCE_PART = Part("ghost_block", (28, 40, 120, 40, 3, 2, 3, 1, True))


# Features of the fallback model, per batch element: ms = sum(coef[i] * feature[i]).
# PyTorch's CPU kernels treat a Ghost module's cheap operation (a d x d conv with groups = its
# input channels and s - 1 outputs per group) three ways, with very different costs. With s = 2
# and d > 1 it is a true depthwise conv (oneDNN's fast kernel, like the strided depthwise conv
# and the shortcut's). With s > 2 and d > 1 it is a grouped conv with a channel multiplier,
# which misses that kernel: ~10x the time per MAC plus microseconds per group. With d = 1 it
# is a grouped 1x1 conv, also off the fast path: ~5 us per group whatever the map size. So MACs
# and group counts are separate features for each; FLOPs alone rank these blocks wrongly.
FEATURES = ("ops", "dense_mmacs", "dw_mmacs", "gconv_mmacs", "gconv_kgroups", "gpw_mmacs",
            "gpw_kgroups", "m_elements")


class _Acc:
    """Accumulates the raw counts behind ``FEATURES``."""

    def __init__(self) -> None:
        self.ops = self.dense = self.dw = self.elems = 0
        self.gconv = self.gconv_groups = self.gpw = self.gpw_groups = 0

    def op(self, n: int = 1, *, dense: int = 0, dw: int = 0, elems: int = 0) -> None:
        self.ops += n
        self.dense += dense
        self.dw += dw
        self.elems += elems

    def features(self) -> tuple[float, ...]:
        return (float(self.ops), self.dense / 1e6, self.dw / 1e6, self.gconv / 1e6,
                self.gconv_groups / 1e3, self.gpw / 1e6, self.gpw_groups / 1e3,
                self.elems / 1e6)


def _ghost_module_features(a: _Acc, cin: int, cout: int, s: int, d: int, relu: bool,
                           side: int) -> None:
    area = side * side
    init = math.ceil(cout / s)
    cheap = init * (s - 1)
    a.op(dense=cin * init * area, elems=init * area)  # primary 1x1 conv
    a.op(2 if relu else 1, elems=(2 if relu else 1) * init * area)  # BN [+ ReLU]
    macs = cheap * d * d * area  # cheap operation: d x d conv, groups = init
    if d == 1:
        a.op(elems=cheap * area)
        a.gpw += macs
        a.gpw_groups += init
    elif s == 2:
        a.op(dw=macs, elems=cheap * area)
    else:
        a.op(elems=cheap * area)
        a.gconv += macs
        a.gconv_groups += init
    a.op(2 if relu else 1, elems=(2 if relu else 1) * cheap * area)
    a.op(2, elems=(init + cheap) * area)  # cat, slice


@functools.lru_cache(maxsize=1 << 16)
def _features(part: Part) -> tuple[float, ...]:
    """Analytic cost features of one batch element of ``part`` (see ``FEATURES``)."""
    f = dict(zip(PART_FIELDS[part.kind], part.values, strict=True))
    a = _Acc()
    side = f["side"]
    if part.kind.endswith("_stem"):
        so = _side_out(side, 3, f["stride"])
        a.op(3, dense=3 * f["cout"] * 9 * so * so, elems=3 * f["cout"] * so * so)
    elif part.kind == "ghost_block":
        cin, mid, cout, k, stride = f["cin"], f["mid"], f["cout"], f["k"], f["stride"]
        _ghost_module_features(a, cin, mid, f["s"], f["d"], True, side)
        so = _side_out(side, k, stride) if stride > 1 else side
        area = so * so
        if stride > 1:
            a.op(2, dw=mid * k * k * area, elems=2 * mid * area)
        if f["se"]:
            red = make_divisible(mid * SE_RATIO, CHANNEL_DIVISOR)
            a.op(6, dense=2 * mid * red, elems=2 * mid * area)  # pool, 2 convs, ReLU, gate, mul
        _ghost_module_features(a, mid, cout, f["s"], f["d"], False, so)
        if not (cin == cout and stride == 1):
            a.op(4, dense=cin * cout * area, dw=cin * k * k * area,
                 elems=2 * (cin + cout) * area)
        a.op(elems=cout * area)  # residual add
    elif part.kind == "mbv3_block":
        cin, exp, cout, k, stride = f["cin"], f["exp"], f["cout"], f["k"], f["stride"]
        so = _side_out(side, k, stride)
        if exp != cin:
            a.op(3, dense=cin * exp * side * side, elems=3 * exp * side * side)
        a.op(3, dw=exp * k * k * so * so, elems=3 * exp * so * so)
        if f["se"]:
            sq = make_divisible(exp // 4, MB_DIVISOR)
            a.op(6, dense=2 * exp * sq, elems=2 * exp * so * so)
        a.op(2, dense=exp * cout * so * so, elems=2 * cout * so * so)
        if stride == 1 and cin == cout:
            a.op(elems=cout * so * so)
    else:  # tails: final/last 1x1 conv + BN + act, pool, then 1x1 vectors through the head
        mid = f["final"] if part.kind == "ghost_tail" else f["last"]
        area = side * side
        a.op(3, dense=f["cin"] * mid * area, elems=3 * mid * area)
        a.op(6, dense=mid * f["head"] + f["head"] * f["num_classes"], elems=mid * area)
    return a.features()


def _fit_nonneg(rows: list[tuple[float, ...]], targets: list[float]) -> tuple[float, ...]:
    """Non-negative least squares with weights 1/sqrt(ms) (a small active-set loop).

    Plain least squares lets the large parts decide everything and least squares on relative
    error lets the many small ones pull the large ones low (-10% to -13% on whole-network sums
    in cross-validation on measured tables); variance proportional to the time sits between and
    kept the sums unbiased (within 2%).
    """
    import numpy as np

    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    w = 1 / np.sqrt(y)
    xw, yw = x * w[:, None], y * w
    active = [j for j in range(x.shape[1]) if np.any(x[:, j] > 0)]
    coef = np.zeros(x.shape[1])
    while active:
        cols = xw[:, active]
        norms = np.linalg.norm(cols, axis=0)
        sol = np.linalg.lstsq(cols / norms, yw, rcond=None)[0] / norms
        if np.all(sol >= 0):
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))  # drop the most negative feature and solve again
    return tuple(float(c) for c in coef)


# ---------------------------------------------------------------------------------------------
# The table


TABLE_FORMAT = "ghostnas-latency-table"
TABLE_VERSION = 2  # 2: SE and head 1x1 convs run as matrix products (space.layers.PooledConv)
# What a loaded table's numbers may be, so that no prediction overflows to inf. The scale is a
# whole network's time over the sum of its parts: 10x off either way, the parts do not describe
# the network (and _fit_calibration falls back to the median ratio). Milliseconds (a part, a
# network, the offset; fallback coefficients are ms per feature unit) stay under 17 minutes.
SCALE_RANGE = (0.1, 10.0)
MAX_MS = 1e6


@dataclass(frozen=True)
class TableSettings:
    """What a table's numbers are valid for."""

    device: str
    device_name: str
    threads: int
    batch: int
    dtype: str
    resolution: int
    torch_version: str

    KEYS = ("device", "device_name", "threads", "batch", "dtype", "resolution", "torch_version")

    @classmethod
    def here(cls, *, device: str = "cpu", threads: int = 1, batch: int = 1,
             dtype: str = "float32", resolution: int = 224) -> TableSettings:
        """The settings of a measurement on this machine with these options."""
        _check_options(device=device, threads=threads, batch=batch, dtype=dtype,
                       resolution=resolution)
        return cls(device, device_name(device), threads, batch, dtype, resolution,
                   torch.__version__)

    def describe(self, keys: Sequence[str] | None = None) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in (keys or self.KEYS))


@dataclass(frozen=True)
class Calibration:
    """predicted = scale * sum of parts + offset_ms, fitted on ``networks`` measured networks."""

    scale: float = 1.0
    offset_ms: float = 0.0
    networks: int = 0


@dataclass(frozen=True)
class NetworkTiming:
    """A whole network measured while building the table.

    role "fit": its parts are in the table and it calibrated the sum of parts; "holdout": its
    parts were not added to the table, it is there for the self-check only.
    """

    name: str
    role: str
    arch: Architecture | MobileNetV3Arch
    measured_ms: float
    rel_ci: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "measured_ms": self.measured_ms,
                "rel_ci": self.rel_ci, "arch": self.arch.to_dict()}


class Prediction(NamedTuple):
    latency_ms: float  # scale * parts_sum_ms + offset_ms
    parts_sum_ms: float
    parts: int
    fallback: tuple[Part, ...]  # parts not in the table, predicted by the fitted model
    source: str  # for a results table's ``latency_source`` column
    method: str = "predicted"


class BuildProgress(NamedTuple):
    done: int  # measurements done (parts and whole networks)
    total: int
    parts_done: int
    parts_total: int
    networks_done: int
    networks_total: int
    elapsed_s: float
    eta_s: float | None  # None until one measurement of each kind has been timed


def _finite(where: str, value: Any, *, positive: bool = False, low: float | None = None,
            high: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and not (positive and value <= 0) and not (low is not None and value < low) \
        and not (high is not None and value > high)
    if not ok:
        expected = f"a finite{' positive' if positive else ''} number"
        if low is not None:
            expected += f" >= {low:g}"
        if high is not None:
            expected += f"{' and' if low is not None else ''} <= {high:g}"
        raise LatencyTableError(f"{where}: got {value!r}, expected {expected}")
    return float(value)


def _checked(where: str, data: Any, required: tuple[str, ...],
             optional: tuple[str, ...] = ()) -> None:
    try:
        check_keys(where, data, required, optional)
    except ArchitectureError as exc:
        raise LatencyTableError(str(exc)) from None


@dataclass(frozen=True)
class LatencyTable:
    """Per-part latencies on one device and settings, with the fallback model and calibration."""

    settings: TableSettings
    entries: dict[Part, float]  # milliseconds per part (median of its timed runs)
    fallback: dict[str, tuple[float, ...]]  # kind (or "*": all kinds) -> coefficients (FEATURES)
    calibration: Calibration
    networks: tuple[NetworkTiming, ...] = ()
    measurement: dict[str, Any] = field(default_factory=dict)  # how the entries were measured
    source: str | None = field(default=None, compare=False)  # the file it was loaded from
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    # -- prediction ----------------------------------------------------------------------------

    def part_ms(self, part: Part) -> tuple[float, bool]:
        """(milliseconds, from the table?) for one part."""
        ms = self.entries.get(part)
        if ms is not None:
            return ms, True
        ms = self._cache.get(part)
        if ms is None:
            coef = self.fallback.get(part.kind) or self.fallback.get("*")
            if coef is None:
                raise LatencyTableError(
                    f"latency table{self._where()} has no {part.kind} parts and no fallback "
                    "model; build it with architectures of that family")
            feats = _features(part)
            ms = self.settings.batch * sum(c * v for c, v in zip(coef, feats, strict=True))
            self._cache[part] = ms
        return ms, False

    def explain(self, arch: Architecture | MobileNetV3Arch) -> Prediction:
        """The prediction with its parts' sum and the parts that came from the fallback model."""
        ps = parts(arch, resolution=self.settings.resolution)
        total = 0.0
        fallback = []
        for p in ps:
            ms, in_table = self.part_ms(p)
            total += ms
            if not in_table:
                fallback.append(p)
        cal = self.calibration
        return Prediction(cal.scale * total + cal.offset_ms, total, len(ps), tuple(fallback),
                          self.prediction_source)

    @property
    def prediction_source(self) -> str:
        """What a predicted latency is, for a results table's ``latency_source`` column."""
        s = self.settings
        return (f"predicted for {s.device_name} ({s.device}, {s.threads} thread"
                f"{'s' if s.threads != 1 else ''}, batch {s.batch}, {s.dtype}, "
                f"{s.resolution}px) by latency table"
                f"{' ' + Path(self.source).name if self.source else ''}")

    @property
    def reference_ms(self) -> float | None:
        """The reference block's time its CPU measurements were corrected against (None: not
        corrected); pass it to :func:`measure_latency` to measure in the table's unit."""
        ref = self.measurement.get("reference_ms")
        return float(ref) if isinstance(ref, (int, float)) and ref > 0 else None

    def predict(self, arch: Architecture | MobileNetV3Arch) -> float:
        """Predicted latency of ``arch`` in milliseconds: scale * sum of parts + offset."""
        return self.explain(arch).latency_ms

    def refit(self) -> LatencyTable:
        """A copy with the fallback model and the calibration fitted again from the entries and
        the "fit" networks (after entries were added, or by a newer GhostNAS)."""
        fallback = _fit_fallback(self.entries, self.settings.batch)
        bare = replace(self, fallback=fallback, calibration=Calibration(), _cache={})
        fit = [n for n in self.networks if n.role == "fit"]
        calibration = _fit_calibration([bare.explain(n.arch).parts_sum_ms for n in fit],
                                       [n.measured_ms for n in fit])
        return replace(bare, calibration=calibration, _cache={})

    def self_check(self, role: str = "holdout") -> dict[str, Any] | None:
        """Prediction error on the whole networks of ``role`` ("holdout" or "fit")."""
        nets = [n for n in self.networks if n.role == role]
        if not nets:
            return None
        errors, fallback, total = [], 0, 0
        for n in nets:
            pred = self.explain(n.arch)
            errors.append(pred.latency_ms / n.measured_ms - 1)
            fallback += len(pred.fallback)
            total += pred.parts
        abs_err = sorted(abs(e) for e in errors)
        return {"networks": len(nets),
                "within_10pct": sum(e <= 0.10 for e in abs_err) / len(nets),
                "median_abs_rel_err": statistics.median(abs_err),
                "max_abs_rel_err": abs_err[-1],
                "mean_rel_err": statistics.fmean(errors),
                "fallback_part_share": fallback / total}

    # -- settings ------------------------------------------------------------------------------

    def _where(self) -> str:
        return f" {str(self.source)!r}" if self.source else ""

    def check(self, **expected: Any) -> None:
        """Refuse (:class:`LatencyTableMismatch`) if any given setting differs from the table's.

        Keys are :attr:`TableSettings.KEYS`; a value of None is not checked. For example
        ``table.check(device="cpu", threads=1, device_name=device_name("cpu"))``.
        """
        unknown = [k for k in expected if k not in TableSettings.KEYS]
        if unknown:
            raise ValueError(f"check: unknown setting {unknown[0]!r}; settings: "
                             f"{', '.join(TableSettings.KEYS)}")
        differ = [k for k, v in expected.items()
                  if v is not None and getattr(self.settings, k) != v]
        if differ:
            asked = ", ".join(f"{k}={expected[k]!r}" for k in differ)
            raise LatencyTableMismatch(
                f"latency table{self._where()} was built for {self.settings.describe(differ)}, "
                f"but {asked} was asked for; build a table with those settings "
                "(python -m search latency-table) on the target device")

    def check_current(self, *, device: str | None = None, **expected: Any) -> None:
        """Refuse the table unless it was built on this machine: the same device type
        (default: the table's) and name (CPU model or GPU name), and any other ``expected``
        settings as in :meth:`check`. For a search that predicts and measures on one machine;
        a table made on another target device passes :meth:`check` only."""
        device = device or self.settings.device
        if device == "cuda" and not torch.cuda.is_available():
            raise LatencyTableMismatch(
                f"latency table{self._where()} was built for "
                f"{self.settings.describe(('device', 'device_name'))}, but this machine has no "
                "CUDA device")
        self.check(device=device, device_name=device_name(device), **expected)

    # -- files ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        c = self.calibration
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "settings": asdict(self.settings),
            "measurement": dict(self.measurement),
            "calibration": {"scale": c.scale, "offset_ms": c.offset_ms, "networks": c.networks},
            "fallback": {"features": list(FEATURES),
                         "coef": {k: list(v) for k, v in self.fallback.items()}},
            # derived from the networks; written for people reading the file, not read back
            "self_check": {"holdout": self.self_check("holdout"), "fit": self.self_check("fit")},
            "networks": [n.to_dict() for n in self.networks],
            "entries": [{**p.to_dict(), "ms": ms} for p, ms in self.entries.items()],
        }

    def dumps(self) -> str:
        """The file's text: indented, one entry and one network per line."""
        data = self.to_dict()
        lines = []
        for key, value in data.items():
            if key in ("entries", "networks") and value:
                inner = ",\n  ".join(json.dumps(v, separators=(",", ":")) for v in value)
                lines.append(f' "{key}": [\n  {inner}\n ]')
            else:
                lines.append(f' "{key}": {json.dumps(value)}')
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write the table atomically; refuses a table larger than loading allows."""
        text = self.dumps()
        if len(text.encode("utf-8")) > MAX_JSON_BYTES:
            raise LatencyTableError(
                f"latency table with {len(self.entries)} entries is larger than "
                f"{MAX_JSON_BYTES // 1024} KiB, the most a table file may hold; build it from "
                "fewer architectures")
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            umask = os.umask(0)  # mkstemp creates 0600; give the file the usual permissions
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> LatencyTable:
        """Parse a table object; every field is validated, unknown keys are errors."""
        _checked("latency table", data, ("format", "version", "settings", "measurement",
                                         "calibration", "fallback", "entries"),
                 ("self_check", "networks"))
        if data["format"] != TABLE_FORMAT:
            raise LatencyTableError(f"format: got {data['format']!r}, expected {TABLE_FORMAT!r}")
        if data["version"] != TABLE_VERSION:
            raise LatencyTableError(f"version: got {data['version']!r}, expected {TABLE_VERSION} "
                                    "(written by another GhostNAS version; rebuild it on the "
                                    "target device with 'python -m search latency-table')")
        st = data["settings"]
        _checked("settings", st, TableSettings.KEYS)
        for k in ("device_name", "torch_version"):
            if not isinstance(st[k], str):
                raise LatencyTableError(f"settings.{k}: got {st[k]!r}, expected a string")
        for k, allowed in (("device", ("cpu", "cuda")), ("dtype", tuple(DTYPES))):
            if not isinstance(st[k], str) or st[k] not in allowed:
                raise LatencyTableError(f"settings.{k}: got {st[k]!r}, expected one of "
                                        f"{', '.join(allowed)}")
        for k in ("threads", "batch", "resolution"):
            if not isinstance(st[k], int) or isinstance(st[k], bool) \
                    or not 1 <= st[k] <= MAX_PART_VALUE:
                raise LatencyTableError(f"settings.{k}: got {st[k]!r}, expected an integer from "
                                        f"1 to {MAX_PART_VALUE:,}")
        settings = TableSettings(**st)
        if not isinstance(data["measurement"], dict):
            raise LatencyTableError("measurement: expected a JSON object")
        if data["measurement"].get("reference_ms") is not None:  # None: not drift-corrected
            _finite("measurement.reference_ms", data["measurement"]["reference_ms"],
                    positive=True, high=MAX_MS)
        cal = data["calibration"]
        _checked("calibration", cal, ("scale", "offset_ms", "networks"))
        if not isinstance(cal["networks"], int) or isinstance(cal["networks"], bool) \
                or cal["networks"] < 0:
            raise LatencyTableError(f"calibration.networks: got {cal['networks']!r}, "
                                    "expected an integer >= 0")
        calibration = Calibration(
            _finite("calibration.scale", cal["scale"], low=SCALE_RANGE[0], high=SCALE_RANGE[1]),
            _finite("calibration.offset_ms", cal["offset_ms"], low=-MAX_MS, high=MAX_MS),
            cal["networks"])
        fb = data["fallback"]
        _checked("fallback", fb, ("features", "coef"))
        if fb["features"] != list(FEATURES):
            raise LatencyTableError(f"fallback.features: got {fb['features']!r}, expected "
                                    f"{list(FEATURES)}")
        if not isinstance(fb["coef"], dict):
            raise LatencyTableError("fallback.coef: expected a JSON object")
        fallback = {}
        for kind, coef in fb["coef"].items():
            if kind not in PART_FIELDS and kind != "*":
                raise LatencyTableError(f"fallback.coef: unknown part kind {kind!r}")
            if not isinstance(coef, list) or len(coef) != len(FEATURES):
                raise LatencyTableError(f"fallback.coef.{kind}: expected {len(FEATURES)} numbers")
            fallback[kind] = tuple(_finite(f"fallback.coef.{kind}", c, low=0.0, high=MAX_MS)
                                   for c in coef)
        if not isinstance(data["entries"], list) or not data["entries"]:
            raise LatencyTableError("entries: expected a non-empty list of parts")
        entries: dict[Part, float] = {}
        for i, e in enumerate(data["entries"]):
            part = Part.from_dict(e, where=f"entries[{i}]", extra=("ms",))
            if part in entries:
                raise LatencyTableError(f"entries[{i}]: the same part appears twice")
            entries[part] = _finite(f"entries[{i}].ms", e["ms"], positive=True, high=MAX_MS)
        networks = []
        raw_nets = data.get("networks", [])
        if not isinstance(raw_nets, list):
            raise LatencyTableError("networks: expected a list")
        for i, n in enumerate(raw_nets):
            _checked(f"networks[{i}]", n, ("name", "role", "measured_ms", "rel_ci", "arch"))
            if n["role"] not in ("fit", "holdout") or not isinstance(n["name"], str):
                raise LatencyTableError(f"networks[{i}]: role must be 'fit' or 'holdout' and "
                                        "name a string")
            try:
                arch = architecture_from_dict(n["arch"])
            except ArchitectureError as exc:
                raise LatencyTableError(f"networks[{i}].arch: {exc}") from None
            networks.append(NetworkTiming(
                n["name"], n["role"], arch,
                _finite(f"networks[{i}].measured_ms", n["measured_ms"], positive=True,
                        high=MAX_MS),
                _finite(f"networks[{i}].rel_ci", n["rel_ci"])))
        return cls(settings, entries, fallback, calibration, tuple(networks),
                   dict(data["measurement"]), source)

    @classmethod
    def load(cls, path: str | os.PathLike, *,
             expect: Mapping[str, Any] | None = None) -> LatencyTable:
        """Read a table file (JSON, size-limited) and :meth:`check` it against ``expect``."""
        try:
            data = read_json_file(path, what="latency table")
        except ArchitectureError as exc:
            raise LatencyTableError(str(exc)) from None
        try:
            table = cls.from_dict(data, source=str(path))
        except LatencyTableMismatch:
            raise
        except LatencyTableError as exc:
            raise LatencyTableError(f"latency table {str(path)!r}: {exc}") from None
        if expect:
            table.check(**expect)
        return table


# ---------------------------------------------------------------------------------------------
# Building a table


def _fit_fallback(entries: Mapping[Part, float], batch: int) -> dict[str, tuple[float, ...]]:
    """Per kind with at least 3 entries per feature; "*" over all entries."""
    by_kind: dict[str, list[Part]] = {}
    for p in entries:
        by_kind.setdefault(p.kind, []).append(p)
    fallback = {}
    groups = [(k, ps) for k, ps in sorted(by_kind.items()) if len(ps) >= 3 * len(FEATURES)]
    groups.append(("*", list(entries)))
    for kind, ps in groups:
        fallback[kind] = _fit_nonneg([_features(p) for p in ps],
                                     [entries[p] / batch for p in ps])
    return fallback


def _fit_calibration(sums: list[float], measured: list[float]) -> Calibration:
    """measured ~ scale * sum + offset, least squares on relative error (ratio if < 3 nets)."""
    n = len(sums)
    if n == 0:
        return Calibration()
    ratio = statistics.median(m / s for s, m in zip(sums, measured, strict=True))
    if n < 3:
        return Calibration(ratio, 0.0, n)
    import numpy as np

    s = np.asarray(sums)
    m = np.asarray(measured)
    a, b = np.linalg.lstsq(np.stack([s / m, 1 / m], axis=1), np.ones(n), rcond=None)[0]
    if not (SCALE_RANGE[0] <= a <= SCALE_RANGE[1] and abs(b) <= MAX_MS
            and np.all(a * s + b > 0)):  # a table must load what it was fitted to
        return Calibration(ratio, 0.0, n)
    return Calibration(float(a), float(b), n)


def build_table(archs: Sequence[Architecture | MobileNetV3Arch], *,
                holdout: Sequence[Architecture | MobileNetV3Arch] = (),
                names: Sequence[str] | None = None, device: str = "cpu", threads: int = 1,
                batch: int = 1, dtype: str = "float32", resolution: int = 224,
                warmup: int = WARMUP, repeats: int | None = None,
                part_time_s: float = PART_TIME_S, network_time_s: float = MAX_TIME_S,
                target_rel_ci: float = TARGET_REL_CI, drift_correction: bool = True,
                reference_ms: float | None = None,
                progress: Callable[[BuildProgress], None] | None = None) -> LatencyTable:
    """Measure the unique parts of ``archs`` and the whole networks; fit fallback and calibration.

    Each architecture's new parts are measured (standalone module, input of the part's shape,
    adaptive repeats capped at ``part_time_s``), then the architecture as a whole network
    (capped at ``network_time_s``). ``holdout`` architectures are measured whole only; their
    parts are not added, so the table's self-check sees them as a search would see a new
    candidate. ``repeats`` fixes the number of timed runs everywhere (tests, smoke runs).
    Each measurement holds the machine-wide lock; other processes' measurements may run
    between two of them rather than wait for the whole build. ``names`` label ``archs`` then
    ``holdout`` in the file (default ``arch0``, ``arch1``, ... and ``holdout0``, ...).
    On CPU every part and network is drift-corrected against one reference time
    (``reference_ms``, default :func:`reference_latency`), kept in the table's ``measurement``
    so that later measurements compared with it can use the same unit.
    """
    _check_options(device=device, threads=threads, batch=batch, dtype=dtype, resolution=resolution)
    _check_timing(warmup=warmup, repeats=repeats, max_time_s=min(part_time_s, network_time_s),
                  target_rel_ci=target_rel_ci)
    archs, holdout = list(archs), list(holdout)
    if not archs:
        raise LatencyError("archs: expected at least one architecture to measure")
    if names is None:
        names = [f"arch{i}" for i in range(len(archs))] + [f"holdout{i}"
                                                           for i in range(len(holdout))]
    elif len(names) != len(archs) + len(holdout):
        raise LatencyError(f"names: got {len(names)}, expected one per architecture "
                           f"({len(archs) + len(holdout)})")
    settings = TableSettings.here(device=device, threads=threads, batch=batch, dtype=dtype,
                                  resolution=resolution)
    plan: list[tuple[int, list[Part]]] = []  # (arch index, its parts not measured before it)
    seen: set[Part] = set()
    for i, arch in enumerate(archs):
        new = [p for p in dict.fromkeys(parts(arch, resolution=resolution)) if p not in seen]
        seen.update(new)
        plan.append((i, new))
    n_parts, n_nets = len(seen), len(archs) + len(holdout)
    reference = _reference_for(device, threads, dtype, drift_correction, reference_ms)
    timing = {"warmup": warmup, "repeats": repeats, "part_time_s": part_time_s,
              "network_time_s": network_time_s, "target_rel_ci": target_rel_ci,
              "reference_ms": reference[1] if reference else None,
              "reference_part": REFERENCE_PART.to_dict() if reference else None}

    start = time.perf_counter()
    spent = {"part": [0.0, 0], "net": [0.0, 0]}  # seconds, count

    def report() -> None:
        if progress is None:
            return
        pd, nd = spent["part"][1], spent["net"][1]
        eta = None
        if (pd or not n_parts) and (nd or not n_nets):
            per_part = spent["part"][0] / pd if pd else 0.0
            per_net = spent["net"][0] / nd if nd else 0.0
            eta = (n_parts - pd) * per_part + (n_nets - nd) * per_net
        progress(BuildProgress(pd + nd, n_parts + n_nets, pd, n_parts, nd, n_nets,
                               time.perf_counter() - start, eta))

    def measure_part(p: Part) -> float:
        t0 = time.perf_counter()
        module = part_module(p).to(device=device, dtype=DTYPES[dtype]).eval()
        x = torch.randn(batch, _part_input_channels(p), p.field("side"), p.field("side"),
                        device=device, dtype=DTYPES[dtype])
        with measurement_lock(), torch.inference_mode():
            t = _time_runs(lambda: module(x), device=device, warmup=warmup, repeats=repeats,
                           max_time_s=part_time_s, target_rel_ci=target_rel_ci,
                           reference=reference)
        spent["part"][0] += time.perf_counter() - t0
        spent["part"][1] += 1
        return statistics.median(t.samples_ms)

    def measure_net(arch: Architecture | MobileNetV3Arch) -> LatencyRecord:
        t0 = time.perf_counter()
        rec = measure_latency(arch, resolution=resolution, batch=batch, device=device,
                              threads=threads, warmup=warmup, repeats=repeats,
                              max_time_s=network_time_s, target_rel_ci=target_rel_ci,
                              dtype=dtype, drift_correction=reference is not None,
                              reference_ms=reference[1] if reference else None)
        spent["net"][0] += time.perf_counter() - t0
        spent["net"][1] += 1
        return rec

    entries: dict[Part, float] = {}
    networks: list[NetworkTiming] = []
    steady_allocator()
    report()
    with _threads(threads):
        for i, new in plan:
            for p in new:
                entries[p] = measure_part(p)
                report()
            rec = measure_net(archs[i])
            networks.append(NetworkTiming(names[i], "fit", archs[i], rec.latency_ms, rec.rel_ci))
            report()
        for j, arch in enumerate(holdout):
            rec = measure_net(arch)
            networks.append(NetworkTiming(names[len(archs) + j], "holdout", arch, rec.latency_ms,
                                          rec.rel_ci))
            report()

    return LatencyTable(settings, entries, {}, Calibration(), tuple(networks), timing).refit()
