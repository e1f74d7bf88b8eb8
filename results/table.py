"""A run folder as pandas tables: one row per trial and per reference, with design columns.

The files are read through :class:`results.runfolder.RunFolder` (the one definition of the
format). Each file is replaced atomically by the run, so reading while a search is still going
gives a consistent snapshot of every file; an absent or empty ``trials.csv`` (no trial finished
yet) is an empty frame with the usual columns.

Design columns are parsed from the ``arch`` JSON of each row (see :data:`DESIGN_COLUMNS`).
GhostNet rows have them all; MobileNetV3 reference rows have no stages and no Ghost ratio or
cheap kernel, so ``n_stages``, ``s_mean`` and ``d_mean`` are NaN there. A row whose ``arch`` cannot
be parsed keeps NaN design columns and an empty ``describe`` (the report still draws it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from results.runfolder import (
    CONFIRM_COLUMNS,
    CURVE_COLUMNS,
    TRIAL_COLUMNS,
    RunFolder,
    parse_arch_cell,
)
from space import Architecture, ArchitectureError

__all__ = ["RunData", "load_run", "design_columns", "DESIGN_COLUMNS", "NUMERIC_TRIAL_COLUMNS",
           "usable", "competing", "candidates", "best_candidate"]

# family     "ghostnet" | "mobilenetv3" ("" if the arch JSON is unreadable)
# width      width multiplier
# depth      number of blocks
# n_stages   number of stages (GhostNet only)
# se_share   share of blocks with squeeze-and-excitation (0-1)
# s_mean     mean Ghost ratio over blocks (GhostNet only)
# d_mean     mean cheap-operation kernel over blocks (GhostNet only)
# k5_share   share of blocks whose depthwise kernel k is 5 (0-1)
# describe   Architecture.describe(): one line, width and per-stage out x depth with s/d/SE mix
DESIGN_COLUMNS = ("family", "width", "depth", "n_stages", "se_share", "s_mean", "d_mean",
                  "k5_share", "describe")
NUMERIC_TRIAL_COLUMNS = ("top1", "loss", "flops", "params", "latency_ms", "epochs", "seconds",
                         "proxy_seconds",
                         "train_seconds", "images_per_second", "number")
BOOLEAN_TRIAL_COLUMNS = ("cached",)
_NUMERIC_DESIGN = ("width", "depth", "n_stages", "se_share", "s_mean", "d_mean", "k5_share")
_NUMERIC_CURVES = ("epoch", "top1", "loss", "seconds")


class RunData(NamedTuple):
    """What ``load_run`` returns: the run's settings and its tables."""

    meta: dict[str, Any]  # run.json
    trials: pd.DataFrame  # TRIAL_COLUMNS + DESIGN_COLUMNS, one row per trial and reference
    curves: pd.DataFrame  # CURVE_COLUMNS, one row per trial and epoch
    path: Path  # the run folder, as given
    # CONFIRM_COLUMNS (confirm.csv, --confirm), one row per retrained network and seed
    confirmations: pd.DataFrame | None = None


def design_columns(arch_json: str | None) -> dict[str, Any]:
    """The design columns of one ``arch`` cell (NaN/"" where they do not apply or it is unreadable)."""
    row: dict[str, Any] = {c: math.nan for c in _NUMERIC_DESIGN}
    row.update(family="", describe="")
    if not arch_json:
        return row
    try:
        arch = parse_arch_cell(arch_json)
    except ArchitectureError:  # a damaged row is still drawn, without its design
        return row
    blocks = arch.blocks
    row.update(
        family=arch.family,
        width=float(arch.width),
        depth=float(arch.depth),
        se_share=sum(b.se for b in blocks) / len(blocks),
        k5_share=sum(b.k == 5 for b in blocks) / len(blocks),
        describe=arch.describe(),
    )
    if isinstance(arch, Architecture):
        row.update(n_stages=float(len(arch.stages)),
                   s_mean=sum(b.s for b in blocks) / len(blocks),
                   d_mean=sum(b.d for b in blocks) / len(blocks))
    return row


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...],
           numeric: tuple[str, ...]) -> pd.DataFrame:
    """Rows as read by RunFolder (None for empty cells) -> float64 numbers, "" for empty text."""
    data: dict[str, Any] = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        if c in numeric:
            data[c] = np.array([np.nan if v is None else float(v) for v in values],
                               dtype=np.float64)
        elif c in BOOLEAN_TRIAL_COLUMNS:  # an older run's missing column reads as False
            data[c] = np.array([bool(v) for v in values], dtype=bool)
        else:
            data[c] = pd.Series(["" if v is None else str(v) for v in values], dtype=object)
    return pd.DataFrame(data, columns=list(columns))


def load_run(path: str | os.PathLike) -> RunData:
    """Read a run folder (raises :class:`results.runfolder.RunFolderError` if it is not one).

    ``trials`` has one row per trial and per reference model, in file order, with every
    ``TRIAL_COLUMNS`` column (numbers as float64, NaN where empty, so ``flops`` and ``params`` are
    floats: convert with ``int()`` for display) followed by ``DESIGN_COLUMNS``.
    """
    folder = RunFolder(path).require()
    meta = folder.read_meta()
    rows = folder.read_trials()
    for row in rows:
        row.update(design_columns(row.get("arch")))
    trials = _frame(rows, TRIAL_COLUMNS + DESIGN_COLUMNS,
                    NUMERIC_TRIAL_COLUMNS + _NUMERIC_DESIGN)
    curves = _frame(folder.read_curves(), CURVE_COLUMNS, _NUMERIC_CURVES)
    confirmations = _frame(folder.read_confirmations(), CONFIRM_COLUMNS,
                           ("seed", "top1", "loss", "seconds"))
    return RunData(meta=meta, trials=trials, curves=curves, path=Path(path),
                   confirmations=confirmations)


def candidates(trials: pd.DataFrame) -> pd.DataFrame:
    """The searched trials (``kind == "candidate"``), every status."""
    return trials[trials["kind"] == "candidate"]


def competing(trials: pd.DataFrame, *, x: str = "flops", y: str = "top1") -> pd.Series:
    """Rows that compete for the Pareto front and the histories: usable and trained for every
    epoch. Early-stopped trials are plotted but do not compete: ASHA stopped them because they
    trailed their peers, and their top1 (from fewer epochs) is not comparable."""
    return usable(trials, x=x, y=y) & (trials["status"] == "finished")


def usable(trials: pd.DataFrame, *, x: str = "flops", y: str = "top1") -> pd.Series:
    """Boolean mask of rows that can be placed on a ``y`` against ``x`` plot: not failed, both
    values finite. Early-stopped trials count (their top1 is from fewer epochs)."""
    xs = pd.to_numeric(trials[x], errors="coerce").to_numpy(dtype=np.float64)
    ys = pd.to_numeric(trials[y], errors="coerce").to_numpy(dtype=np.float64)
    ok = (trials["status"] != "failed").to_numpy() & np.isfinite(xs) & np.isfinite(ys)
    return pd.Series(ok, index=trials.index)


def _number(value: Any) -> float:
    """A cell as a float; NaN when empty or not a number."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def best_candidate(rows: Iterable[Mapping[str, Any]], *, max_flops: float | None = None,
                   max_latency_ms: float | None = None) -> Mapping[str, Any] | None:
    """The run's best candidate: the one rule behind "best" everywhere (the progress line,
    ``export --best``, the report).

    Among candidates that finished every epoch with a top1 (and, where given, FLOPs within
    ``max_flops`` and latency within ``max_latency_ms``), the highest top1; ties go to fewer
    FLOPs, then to the earlier trial id. ``rows`` are trials.csv records (dicts, or a frame's
    ``to_dict("records")``); None when no row qualifies.
    """
    def ok(r: Mapping[str, Any]) -> bool:
        if r.get("kind") != "candidate" or r.get("status") != "finished":
            return False
        if not math.isfinite(_number(r.get("top1"))):
            return False
        if max_flops is not None and not _number(r.get("flops")) <= max_flops:
            return False
        return max_latency_ms is None or _number(r.get("latency_ms")) <= max_latency_ms

    def key(r: Mapping[str, Any]) -> tuple[float, float, str]:
        flops = _number(r.get("flops"))
        return (-_number(r["top1"]), flops if math.isfinite(flops) else math.inf,
                str(r.get("trial_id")))

    pool = [r for r in rows if ok(r)]
    return min(pool, key=key) if pool else None
