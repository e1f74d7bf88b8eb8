"""A search run's latencies: predicted from a table while it searches, or measured after it.

Measuring a network's latency next to trials that train would time the contention, not the
network; so a run measures after its last trial, on a machine none of its trials uses, unless
``--latency-table`` predicts each latency (which the search needs when latency is an objective
or has a budget: the sampler must know it when a trial finishes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import evaluators.latency as latency
from evaluators.flops import DEFAULT_RESOLUTION
from results.runfolder import RunFolder, RunFolderError
from search.settings import RunSettings
from space import ArchLike

__all__ = ["REFERENCE_KEY", "latency_predictor", "run_reference_ms", "measure_latencies"]

REFERENCE_KEY = "latency_reference_ms"  # run.json: the reference block time latencies are scaled by


def latency_predictor(settings: RunSettings
                      ) -> tuple[Callable[[ArchLike], float] | None, str]:
    """(predict, source text) from ``--latency-table``, or (None, "") to measure instead.

    A table may describe another device than the one searching (build it on your phone's CPU,
    search on a GPU server): it is used as it is, and every row says which device its latency
    is for. It must be for the deployment resolution, 224, like the FLOPs.
    """
    if settings.latency_table is None:
        return None, ""
    table = latency.LatencyTable.load(settings.latency_table)
    table.check(resolution=DEFAULT_RESOLUTION)
    return table.predict, table.prediction_source


def run_reference_ms(folder: RunFolder, meta: dict[str, Any]) -> float | None:
    """run.json's (``meta``) reference block time in ms, None before the latency phase; damage
    is an error naming ``folder``'s run.json."""
    value = meta.get(REFERENCE_KEY)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                         and math.isfinite(value) and value > 0):
        return value
    raise RunFolderError(f"{folder.meta_path}: {REFERENCE_KEY}: got {value!r}, expected a "
                         "positive number of ms; the file is damaged (restore it, or pass a new "
                         "--out)")


def measure_latencies(rows: list[dict[str, Any]], *, folder: RunFolder, meta: dict[str, Any],
                      write_meta: Callable[[], None], log: Callable[[str], None]) -> None:
    """Batch-1 CPU latency of every network in ``rows`` without one, after the search; each
    row is written to ``folder`` as soon as it is measured.

    Drift correction scales each measurement by the reference block's undisturbed time, which
    differs between processes (benchmarks/results/latency_drift.json). The run keeps the first
    value it used in run.json (``meta``, saved by ``write_meta``), so a run resumed part-way
    through this phase measures its remaining networks in the same unit as the others.
    """
    todo = [r for r in rows if r["status"] != "failed" and r["latency_ms"] is None]
    if not todo:
        return
    log(f"measuring batch-1 latency at 224x224 of {len(todo)} networks with no trial "
        "running (CPU, 1 thread; median of repeats, drift-corrected against a reference "
        "block)")
    reference_ms = run_reference_ms(folder, meta)
    if reference_ms is None:
        reference_ms = latency.reference_latency(threads=1)
        meta[REFERENCE_KEY] = reference_ms
        write_meta()
        log(f"  reference block: {reference_ms:.3f} ms undisturbed (kept in run.json: a "
            "resumed run measures in the same unit)")
    else:
        log(f"  reference block: {reference_ms:.3f} ms, this run's unit (from run.json)")
    for i, row in enumerate(todo, 1):
        arch = folder.row_architecture(row)
        rec = latency.measure_latency(arch, resolution=DEFAULT_RESOLUTION, batch=1,
                                      device="cpu", threads=1, reference_ms=reference_ms)
        row["latency_ms"] = rec.latency_ms
        row["latency_source"] = f"{rec.source} after the search, no trial running"
        folder.write_trials(rows)
        log(f"  [{i}/{len(todo)}] {row['name'] or row['trial_id']:<22} "
            f"{rec.latency_ms:7.2f} ms (median; uncorrected {rec.raw_ms or rec.latency_ms:.2f})")
