"""Measured latency: one network's inference time on this machine, drift-corrected on CPU.

The network is built, put in eval mode and run under ``torch.inference_mode`` on a random input
of the deployment shape (batch 1 by default, 3 x 224 x 224), with a fixed intra-op thread count
(restored afterwards), after warm-up runs, each run timed on its own by
:mod:`evaluators.latency.timing`; the record keeps the median with its dispersion.

**Drift correction (CPU).** A shared machine's speed moves from one run to the next, by more
than the differences a search needs to see (``benchmarks/latency_drift.py`` measures how much).
So on CPU each timed run is paired with a timed run of a fixed *reference block*
(``REFERENCE_PART``: a Ghost bottleneck with SE at 28 x 28), run twice just before it and timed
the second time (a first run after a large network is slower from cold caches, which would
make the reference depend on what ran before it). A run's corrected time is
``its time * reference_ms / the reference's time in its pair``, and the measurement is the
median of those. ``reference_ms`` is the reference block's time on the undisturbed machine in
the same setting: a low quantile of its paired runs next to GhostNet 0.5x, once per process
(:func:`reference_latency`), or the one a latency table was built with, so that a table and the
measurements compared with it share one unit. Two caveats: the correction can overshoot when
noise slows the small reference more than a network, and the reference time of fresh processes
varies, so absolute figures from different processes (not those in one table or one search's
latency phase) can differ. The record keeps the uncorrected median (``raw_ms``);
``drift_correction=False`` turns the correction off; on CUDA it does not apply (CUDA events
time the GPU alone).

The record also says whether it was taken under the machine-wide lock, what the 1-minute load
average was when it started, and (CPU, one thread) the measuring thread's CPU time, which falls
below the wall time when other processes took the core.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from evaluators.latency.errors import LatencyError
from evaluators.latency.options import DTYPES, check_options, device_name
from evaluators.latency.parts import Part, part_input_channels, part_module
from evaluators.latency.timing import (
    MAX_TIME_S,
    MIN_REPEATS,
    TARGET_REL_CI,
    WARMUP,
    Timing,
    check_timing,
    intra_op_threads,
    load_1m,
    measurement_lock,
    median_rel_ci,
    steady_allocator,
    time_runs,
)
from space import Architecture, ArchLike, MobileNetV3Arch, create_architecture

__all__ = ["LatencyRecord", "REFERENCE_PART", "REFERENCE_TIME_S", "REFERENCE_QUANTILE",
           "measure_latency", "reference_latency", "reference_for"]

# The reference block of drift correction: GhostNet 1.0x's 5th block with SE on (28 x 28,
# 40 -> 120 -> 40): dense 1x1, depthwise and SE kernels, short enough to pair with every run.
REFERENCE_PART = Part("ghost_block", (28, 40, 120, 40, 3, 2, 3, 1, True))
REFERENCE_TIME_S = 1.5  # paired runs of the reference block that set reference_ms
REFERENCE_QUANTILE = 0.10  # reference_ms = this quantile of them: the undisturbed machine


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


# ---------------------------------------------------------------------------------------------
# The reference block


@functools.cache
def _reference_run(dtype: str) -> Callable[[], Any]:
    """One CPU inference run of the reference block (fixed weights), as a closure."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = part_module(REFERENCE_PART).to(dtype=DTYPES[dtype]).eval()
        side = REFERENCE_PART.field("side")
        x = torch.randn(1, part_input_channels(REFERENCE_PART), side, side, dtype=DTYPES[dtype])

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
    check_options(device="cpu", threads=threads, batch=1, dtype=dtype, resolution=224)
    return _reference_ms(threads, dtype)


@functools.cache  # positional arguments only: one cache entry per (threads, dtype)
def _reference_ms(threads: int, dtype: str) -> float:
    run = _reference_run(dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        context = create_architecture("ghostnet_050").build().to(dtype=DTYPES[dtype]).eval()
        x = torch.randn(1, 3, 224, 224, dtype=DTYPES[dtype])
    steady_allocator()
    samples: list[float] = []
    with measurement_lock(), intra_op_threads(threads), torch.inference_mode():
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


def reference_for(device: str, threads: int, dtype: str, drift_correction: bool,
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


# ---------------------------------------------------------------------------------------------
# A measurement


def _record(timing: Timing, *, warmup: int, device: str, threads: int, batch: int, dtype: str,
            resolution: int, locked: bool, load_1m: float | None,
            reference_ms: float | None = None) -> LatencyRecord:
    s = sorted(timing.samples_ms)
    q = statistics.quantiles(s, n=20, method="inclusive") if len(s) > 1 else [s[0]] * 19
    return LatencyRecord(
        latency_ms=statistics.median(s), iqr_ms=q[14] - q[4], p90_ms=q[17], min_ms=s[0],
        rel_ci=median_rel_ci(s), repeats=len(s), warmup=warmup, converged=timing.converged,
        device=device, device_name=device_name(device), threads=threads, batch=batch,
        dtype=dtype, resolution=resolution, torch_version=torch.__version__, locked=locked,
        load_1m=load_1m, cpu_ms=statistics.median(timing.cpu_ms) if timing.cpu_ms else None,
        raw_ms=statistics.median(timing.raw_ms) if timing.raw_ms else None,
        reference_ms=reference_ms if timing.raw_ms else None)


@contextlib.contextmanager
def _prepared(module: nn.Module, device: str, dtype: str) -> Iterator[nn.Module]:
    """``module`` in eval mode on ``device``/``dtype``; the caller's module is left as it was
    (moved as a copy if needed, training flag restored)."""
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


def measure_latency(model_or_arch: nn.Module | ArchLike, *,
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
    check_options(device=device, threads=threads, batch=batch, dtype=dtype, resolution=resolution)
    check_timing(warmup=warmup, repeats=repeats, max_time_s=max_time_s,
                 target_rel_ci=target_rel_ci)
    if isinstance(model_or_arch, nn.Module):
        module = model_or_arch
    elif isinstance(model_or_arch, (Architecture, MobileNetV3Arch)):
        module = model_or_arch.build().to(device=device, dtype=DTYPES[dtype])
    else:
        raise LatencyError(f"model_or_arch: got {type(model_or_arch).__name__}, expected an "
                           "nn.Module or an architecture value")
    steady_allocator()
    reference = reference_for(device, threads, dtype, drift_correction, reference_ms)
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=DTYPES[dtype])
    lock_cm = measurement_lock() if lock else contextlib.nullcontext(False)
    with lock_cm as locked, intra_op_threads(threads), _prepared(module, device, dtype) as m, \
            torch.inference_mode():
        load = load_1m()
        timing = time_runs(lambda: m(x), device=device, warmup=warmup, repeats=repeats,
                           max_time_s=max_time_s, target_rel_ci=target_rel_ci,
                           cpu_clock=device == "cpu" and threads == 1, reference=reference)
    return _record(timing, warmup=warmup, device=device, threads=threads, batch=batch,
                   dtype=dtype, resolution=resolution, locked=bool(locked), load_1m=load,
                   reference_ms=reference[1] if reference else None)
