"""Building a latency table: measure the unique parts of some architectures, and the networks.

Each architecture's new parts are measured (a standalone module on an input of the part's
shape, adaptive repeats capped at ``part_time_s``), then the architecture as a whole network
(capped at ``network_time_s``); held-out architectures are measured whole only, for the
table's self-check. Then the fallback model and the calibration are fitted
(:meth:`LatencyTable.refit`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from evaluators.latency.errors import LatencyError
from evaluators.latency.measure import (
    REFERENCE_PART,
    LatencyRecord,
    measure_latency,
    reference_for,
)
from evaluators.latency.options import DTYPES, check_options
from evaluators.latency.parts import Part, part_input_channels, part_module, parts
from evaluators.latency.predictor import Calibration
from evaluators.latency.table import LatencyTable, NetworkTiming, TableSettings
from evaluators.latency.timing import (
    MAX_TIME_S,
    PART_TIME_S,
    TARGET_REL_CI,
    WARMUP,
    check_timing,
    intra_op_threads,
    measurement_lock,
    steady_allocator,
    time_runs,
)
from space import ArchLike

__all__ = ["BuildProgress", "build_table"]

class BuildProgress(NamedTuple):
    done: int  # measurements done (parts and whole networks)
    total: int
    parts_done: int
    parts_total: int
    networks_done: int
    networks_total: int
    elapsed_s: float
    eta_s: float | None  # None until one measurement of each kind has been timed


class _Build:
    """One table build: its settings, the measurements in order, and the progress reports."""

    def __init__(self, archs: list[ArchLike], holdout: list[ArchLike], *,
                 settings: TableSettings, timing: dict[str, Any],
                 reference: tuple[Callable[[], Any], float] | None,
                 progress: Callable[[BuildProgress], None] | None) -> None:
        self.archs, self.holdout = archs, holdout
        self.settings, self.timing, self.reference = settings, timing, reference
        self.progress = progress
        self.plan: list[tuple[int, list[Part]]] = []  # (arch index, its parts new at it)
        seen: set[Part] = set()
        for i, arch in enumerate(archs):
            new = [p for p in dict.fromkeys(parts(arch, resolution=settings.resolution))
                   if p not in seen]
            seen.update(new)
            self.plan.append((i, new))
        self.n_parts, self.n_nets = len(seen), len(archs) + len(holdout)
        self.start = time.perf_counter()
        self.spent = {"part": [0.0, 0], "net": [0.0, 0]}  # seconds, count

    def report(self) -> None:
        if self.progress is None:
            return
        pd, nd = self.spent["part"][1], self.spent["net"][1]
        eta = None
        if (pd or not self.n_parts) and (nd or not self.n_nets):
            per_part = self.spent["part"][0] / pd if pd else 0.0
            per_net = self.spent["net"][0] / nd if nd else 0.0
            eta = (self.n_parts - pd) * per_part + (self.n_nets - nd) * per_net
        self.progress(BuildProgress(pd + nd, self.n_parts + self.n_nets, pd, self.n_parts, nd,
                                    self.n_nets, time.perf_counter() - self.start, eta))

    def measure_part(self, p: Part) -> float:
        """The part's median ms: its module alone, on an input of its shape, under the lock."""
        t0 = time.perf_counter()
        s, t = self.settings, self.timing
        module = part_module(p).to(device=s.device, dtype=DTYPES[s.dtype]).eval()
        x = torch.randn(s.batch, part_input_channels(p), p.field("side"), p.field("side"),
                        device=s.device, dtype=DTYPES[s.dtype])
        with measurement_lock(), torch.inference_mode():
            timing = time_runs(lambda: module(x), device=s.device, warmup=t["warmup"],
                               repeats=t["repeats"], max_time_s=t["part_time_s"],
                               target_rel_ci=t["target_rel_ci"], reference=self.reference)
        self.spent["part"][0] += time.perf_counter() - t0
        self.spent["part"][1] += 1
        return statistics.median(timing.samples_ms)

    def measure_net(self, arch: ArchLike) -> LatencyRecord:
        t0 = time.perf_counter()
        s, t, ref = self.settings, self.timing, self.reference
        rec = measure_latency(arch, resolution=s.resolution, batch=s.batch, device=s.device,
                              threads=s.threads, warmup=t["warmup"], repeats=t["repeats"],
                              max_time_s=t["network_time_s"], target_rel_ci=t["target_rel_ci"],
                              dtype=s.dtype, drift_correction=ref is not None,
                              reference_ms=ref[1] if ref else None)
        self.spent["net"][0] += time.perf_counter() - t0
        self.spent["net"][1] += 1
        return rec

    def run(self, names: Sequence[str]) -> LatencyTable:
        """Measure everything in order (each architecture's new parts, then it whole; then the
        held-out networks) and fit the table."""
        entries: dict[Part, float] = {}
        networks: list[NetworkTiming] = []
        steady_allocator()
        self.report()
        with intra_op_threads(self.settings.threads):
            for i, new in self.plan:
                for p in new:
                    entries[p] = self.measure_part(p)
                    self.report()
                rec = self.measure_net(self.archs[i])
                networks.append(NetworkTiming(names[i], "fit", self.archs[i], rec.latency_ms,
                                              rec.rel_ci))
                self.report()
            for j, arch in enumerate(self.holdout):
                rec = self.measure_net(arch)
                networks.append(NetworkTiming(names[len(self.archs) + j], "holdout", arch,
                                              rec.latency_ms, rec.rel_ci))
                self.report()
        return LatencyTable(self.settings, entries, {}, Calibration(), tuple(networks),
                            self.timing).refit()


def _names(names: Sequence[str] | None, n_archs: int, n_holdout: int) -> Sequence[str]:
    if names is None:
        return [f"arch{i}" for i in range(n_archs)] + [f"holdout{i}" for i in range(n_holdout)]
    if len(names) != n_archs + n_holdout:
        raise LatencyError(f"names: got {len(names)}, expected one per architecture "
                           f"({n_archs + n_holdout})")
    return names


def build_table(archs: Sequence[ArchLike], *, holdout: Sequence[ArchLike] = (),
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
    check_options(device=device, threads=threads, batch=batch, dtype=dtype, resolution=resolution)
    check_timing(warmup=warmup, repeats=repeats, max_time_s=min(part_time_s, network_time_s),
                 target_rel_ci=target_rel_ci)
    archs, holdout = list(archs), list(holdout)
    if not archs:
        raise LatencyError("archs: expected at least one architecture to measure")
    names = _names(names, len(archs), len(holdout))
    settings = TableSettings.here(device=device, threads=threads, batch=batch, dtype=dtype,
                                  resolution=resolution)
    reference = reference_for(device, threads, dtype, drift_correction, reference_ms)
    timing = {"warmup": warmup, "repeats": repeats, "part_time_s": part_time_s,
              "network_time_s": network_time_s, "target_rel_ci": target_rel_ci,
              "reference_ms": reference[1] if reference else None,
              "reference_part": REFERENCE_PART.to_dict() if reference else None}
    return _Build(archs, holdout, settings=settings, timing=timing, reference=reference,
                  progress=progress).run(names)

