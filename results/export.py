"""Export a found architecture from a run folder to an architecture JSON file with provenance.

The file is space's architecture format plus a ``provenance`` object (run folder, trial id,
figures, dataset, epochs, export time), so ``python -m search show FILE`` and ``train FILE`` read
it. Choosing the trial (:func:`select_trial`) is separate from writing it
(:func:`export_architecture`).
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from evaluators.budget import format_flops
from results.runfolder import ArchCellNotJSON, check_output_file, parse_arch_cell
from results.table import RunData, best_candidate, candidates, load_run
from space import ArchitectureError, ArchLike, UserError, save_architecture

__all__ = ["ExportError", "Exported", "select_trial", "trial_architecture", "provenance",
           "export_architecture"]


class ExportError(UserError):
    """A trial that cannot be exported, or an ``--out`` that must not be written."""


class Exported(NamedTuple):
    path: Path
    data: dict[str, Any]  # the JSON object written (architecture + provenance)
    trial: pd.Series  # the trials.csv row


def _ids(rows: pd.DataFrame, limit: int = 5) -> str:
    ids = list(rows["trial_id"])
    more = f", ... ({len(ids)} in all)" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def select_trial(run: RunData, *, trial_id: str | None = None, best: bool = False,
                 max_flops: float | None = None, max_latency_ms: float | None = None) -> pd.Series:
    """The row to export: ``trial_id``, or with ``best`` the run's best candidate
    (:func:`results.table.best_candidate`) within ``max_flops`` / ``max_latency_ms``."""
    if (trial_id is None) == (not best):
        raise ValueError("trial_id/best: give exactly one")
    if trial_id is None:
        return _best_trial(run, max_flops=max_flops, max_latency_ms=max_latency_ms)
    if max_flops is not None or max_latency_ms is not None:
        raise ExportError("--max-flops/--max-latency choose among trials with --best; "
                          "drop them or use --best instead of --trial")
    return _named_trial(run, trial_id)


def _named_trial(run: RunData, trial_id: str) -> pd.Series:
    """The row of ``trial_id``, or an error unless it is a candidate with a result."""
    trials = run.trials
    match = trials[trials["trial_id"] == trial_id]
    if match.empty:
        cands = candidates(trials)
        hint = (f"valid candidate ids: {_ids(cands)}" if len(cands)
                else "the run has no candidate trials yet")
        raise ExportError(f"unknown trial id {trial_id!r} in {str(run.path)!r}; {hint}")
    row = match.iloc[-1]
    if row["kind"] == "reference":
        name = row["name"] or trial_id.removeprefix("ref-")
        raise ExportError(
            f"trial {trial_id!r} is the reference model {name!r}, not a found architecture; "
            f"use its registered name instead (e.g. python -m search show {name})")
    if row["status"] == "failed":
        why = f" ({row['error']})" if row["error"] else ""
        raise ExportError(f"trial {trial_id!r} failed{why}; it has no result to export; "
                          "choose a finished trial or use --best")
    return row


def _best_trial(run: RunData, *, max_flops: float | None,
                max_latency_ms: float | None) -> pd.Series:
    """The row :func:`results.table.best_candidate` picks, or an error that says which limit
    left nothing and what the closest candidate is."""
    cands = candidates(run.trials)
    finished = cands[(cands["status"] == "finished") & cands["top1"].notna()]
    if finished.empty:
        raise ExportError(f"no finished candidate trial in {str(run.path)!r} yet; "
                          "nothing to choose with --best")
    best = best_candidate(finished.to_dict("records"), max_flops=max_flops,
                          max_latency_ms=max_latency_ms)
    if best is not None:
        return finished[finished["trial_id"] == best["trial_id"]].iloc[0]
    if max_flops is not None and not (finished["flops"] <= max_flops).any():
        known = finished[finished["flops"].notna()]
        smallest = (f"the smallest among finished candidates is "
                    f"{format_flops(known['flops'].min())} "
                    f"({known.loc[known['flops'].idxmin(), 'trial_id']})"
                    if len(known) else "no finished candidate has FLOPs recorded")
        raise ExportError(f"no finished candidate within --max-flops "
                          f"{format_flops(max_flops)} ({int(max_flops):,} MACs); {smallest}")
    assert max_latency_ms is not None  # with no limit left, best_candidate finds a row
    timed = finished[finished["latency_ms"].notna()]
    if timed.empty:
        raise ExportError("--max-latency: this run recorded no latency for any finished "
                          "candidate (latency not measured); drop --max-latency")
    fastest = timed.loc[timed["latency_ms"].idxmin()]
    within = " that is also within --max-flops" if max_flops is not None else ""
    raise ExportError(f"no finished candidate{within} within --max-latency "
                      f"{max_latency_ms:g} ms; the fastest finished candidate takes "
                      f"{fastest['latency_ms']:.3g} ms ({fastest['trial_id']})")


def trial_architecture(row: pd.Series) -> ArchLike:
    """The architecture value of a trials.csv row."""
    try:
        return parse_arch_cell(row["arch"])
    except ArchitectureError as exc:
        what = "its arch cell is " if isinstance(exc, ArchCellNotJSON) else ""
        raise ExportError(f"trial {row['trial_id']!r}: {what}{exc}") from None


def _num(value: Any, cast: type) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return cast(value)


def provenance(run: RunData, row: pd.Series, *, exported_at: datetime | None = None
               ) -> dict[str, Any]:
    """Where an exported architecture came from and its figures (None where not recorded)."""
    when = exported_at or datetime.now(timezone.utc)
    epochs = _num(row["epochs"], int)
    if epochs is None:
        epochs = run.meta.get("epochs")
    return {
        "run": str(Path(run.path).resolve()),
        "trial_id": str(row["trial_id"]),
        "status": str(row["status"]),
        "top1": _num(row["top1"], float),  # proxy top-1 on the held-out split, percent
        "flops": _num(row["flops"], int),  # multiply-accumulates at 224x224
        "params": _num(row["params"], int),
        "latency_ms": _num(row["latency_ms"], float),
        "latency_source": str(row["latency_source"]) or None,
        "dataset": run.meta.get("dataset"),
        "epochs": epochs,
        "exported_at": when.isoformat(timespec="seconds"),
    }


def export_architecture(run_dir: str | os.PathLike, *, out: str | os.PathLike,
                        trial_id: str | None = None, best: bool = False,
                        max_flops: float | None = None, max_latency_ms: float | None = None,
                        force: bool = False) -> Exported:
    """Write the chosen trial's architecture (with provenance) to ``out``, exactly there.

    Refuses an existing ``out`` unless ``force``; never creates folders.
    """
    out = check_output_file(out, force=force, example="arch.json", error=ExportError)
    run = load_run(run_dir)
    row = select_trial(run, trial_id=trial_id, best=best, max_flops=max_flops,
                       max_latency_ms=max_latency_ms)
    arch = trial_architecture(row)
    try:
        data = save_architecture(arch, out, provenance=provenance(run, row))
    except OSError as exc:
        raise ExportError(f"--out {str(out)!r}: cannot write ({exc.strerror})") from None
    return Exported(out, data, row)
