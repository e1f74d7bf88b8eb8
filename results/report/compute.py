"""What the report shows, as plain data: pure functions of a loaded run, no drawing.

Each ``compute_*`` returns a NamedTuple that one ``draw_*`` function of
:mod:`results.report.figures` (or one section of :mod:`results.report.page`) turns into a figure
or HTML; tests check these values directly. :func:`pareto_table` is also ``pareto.csv``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from evaluators.budget import format_flops
from evaluators.proxy_presets import ProxyPreset, data_kind, describe
from results.compare import Standing, hypervolume_gain, neighbours, reference_standing
from results.confirm import confirmed as confirmed_trials
from results.noise import run_noise
from results.pareto import (
    History,
    best_under_budget_history,
    hypervolume_history,
    pareto_front,
    reference_point,
    run_budget,
)
from results.runfolder import safe_name
from results.table import RunData, competing, usable

__all__ = ["AXES", "Axis", "DESIGN_VARIABLES", "PARETO_COLUMNS", "ScatterData", "HistoryData",
           "DesignData", "Summary", "StandingData", "OverlayRun", "compute_scatter",
           "compute_history", "compute_design", "compute_summary", "compute_standing",
           "compute_overlay", "pareto_table", "export_command"]


class Axis(NamedTuple):
    column: str  # trials.csv column
    label: str  # axis title
    scale: float  # the column is divided by this for plotting
    unit: str


AXES = {
    "flops": Axis("flops", "FLOPs (M multiply-accumulates at 224×224)", 1e6, "M MACs"),
    "latency_ms": Axis("latency_ms", "latency (ms, batch 1, median)", 1.0, "ms"),
}

# (column, label) of the design choices plotted against top1 and FLOPs
DESIGN_VARIABLES = (
    ("width", "width multiplier"),
    ("depth", "depth (blocks)"),
    ("n_stages", "stages"),
    ("s_mean", "mean Ghost ratio s"),
    ("d_mean", "mean cheap kernel d"),
    ("se_share", "SE share of blocks"),
    ("k5_share", "share of blocks with k=5"),
)

_TRIALS_KEYS = ("trials", "n_trials", "trials_requested")
_REJECTED_KEYS = ("rejected_over_budget", "rejected", "n_rejected")
_RUN_SETTINGS = (  # (label, run.json keys tried in order)
    ("dataset", ("dataset",)),
    ("proxy preset", ("proxy_preset",)),
    ("epochs per trial", ("epochs",)),
    ("sampler", ("sampler",)),
    ("scheduler", ("scheduler",)),
    ("seed", ("seed",)),
    ("objectives", ("objectives",)),
    ("FLOPs budget", ("budget_flops",)),
    ("latency budget", ("latency_budget_ms",)),
    ("trials requested", _TRIALS_KEYS),
    ("rejected over budget", _REJECTED_KEYS),
)


class ScatterData(NamedTuple):
    """What one top1-against-cost plot shows."""

    axis: Axis
    finished: pd.DataFrame  # candidates placed on the plot, status finished
    early_stopped: pd.DataFrame  # candidates placed on the plot, status early_stopped
    front: pd.DataFrame  # Pareto front, sorted by cost
    references: pd.DataFrame  # reference models with both values
    budget: float | None  # in the column's unit (MACs, ms)
    n_failed: int  # failed candidates (not plotted)
    n_unplaced: int  # candidates neither failed nor plotted (cost or top1 missing)
    gaps: dict[str, float] = {}  # reference name -> best candidate at no more cost - it, points

    @property
    def n_placed(self) -> int:
        """Points on the plot: candidates of either status and references."""
        return len(self.finished) + len(self.early_stopped) + len(self.references)


def compute_scatter(run: RunData, *, x: str = "flops") -> ScatterData:
    if x not in AXES:
        raise ValueError(f"x: got {x!r}, expected one of {', '.join(AXES)}")
    t = run.trials
    cand = t[t["kind"] == "candidate"]
    ok = usable(cand, x=x)
    refs = t[t["kind"] == "reference"]
    failed = int((cand["status"] == "failed").sum())
    return ScatterData(
        axis=AXES[x],
        finished=cand[ok & (cand["status"] == "finished")],
        early_stopped=cand[ok & (cand["status"] != "finished")],
        front=pareto_front(t, x=x, y="top1"),
        references=refs[usable(refs, x=x)],
        budget=run_budget(run.meta, x),
        n_failed=failed,
        n_unplaced=int(len(cand) - failed - ok.sum()),
        gaps={st.reference: st.gap for st in reference_standing(t, cost=x)},
    )


class StandingData(NamedTuple):
    """Where the hand design stands (:mod:`results.compare`)."""

    flops: list[Standing]  # each reference against the best candidate at no more FLOPs
    latency: list[Standing]  # the same at no more latency (empty when not measured)
    neighbours: dict[str, str]  # candidate -> the reference it is a neighbour of
    hv_gain: float  # HV(candidates + references) / HV(references) on top1/FLOPs (NaN: none)


def compute_standing(run: RunData, *, confirmed: bool = False) -> StandingData:
    """The standing on the search's held-out figures, or (``confirmed``) on the confirmed means
    of the networks ``--confirm`` trained again (:mod:`results.confirm`)."""
    t = confirmed_trials(run) if confirmed else run.trials
    near = neighbours(t)
    ref = reference_point(t, run.meta, x="flops")
    noise = run_noise(run.meta)
    return StandingData(
        flops=reference_standing(t, cost="flops", near=near, noise=noise),
        latency=reference_standing(t, cost="latency_ms", near=near, noise=noise),
        neighbours=near,
        hv_gain=hypervolume_gain(t, ref_x=ref[0], ref_y=ref[1]) if ref else math.nan)


class OverlayRun(NamedTuple):
    """One run of a comparison: its label, front, references and headline figures."""

    label: str  # the run folder's name (made unique)
    path: str
    settings: str  # sampler, scheduler, seed, dataset
    front: pd.DataFrame  # its top1/FLOPs Pareto front, by FLOPs
    references: pd.DataFrame  # its reference models that finished
    candidates: int
    hv_gain: float
    matched: int  # references matched or beaten at no more FLOPs
    n_references: int
    candidate_seconds: float  # proxy seconds of its candidates (cached ones at their cost)


def compute_overlay(runs: list[RunData]) -> list[OverlayRun]:
    """Each run's front and figures, for one plot and table comparing several runs."""
    out, seen = [], set()
    for run in runs:
        label = Path(run.path).resolve().name
        while label in seen:
            label += "'"
        seen.add(label)
        t, meta = run.trials, run.meta
        standing = compute_standing(run)
        refs = t[(t["kind"] == "reference") & competing(t, x="flops")]
        cands = t[t["kind"] == "candidate"]
        out.append(OverlayRun(
            label=label, path=str(run.path),
            settings=", ".join(f"{k} {meta[k]}" for k in ("dataset", "sampler", "scheduler",
                                                          "seed") if k in meta),
            front=pareto_front(t, x="flops", y="top1"), references=refs,
            candidates=len(cands), hv_gain=standing.hv_gain,
            matched=sum(st.matched for st in standing.flops),
            n_references=len(standing.flops),
            candidate_seconds=float(cands["proxy_seconds"].fillna(0).sum())))
    return out


class HistoryData(NamedTuple):
    """Is the search still improving? Values after each candidate trial, in trial order."""

    hypervolume: History  # raw area, MACs x percent
    hypervolume_share: np.ndarray  # hypervolume / (ref_x * (100 - ref_y)), 0-1
    ref_x: float
    ref_y: float
    best_flops: History  # best top1 within the FLOPs budget (any FLOPs if there is none)
    flops_budget: float | None
    best_latency: History | None  # best top1 within the latency budget, if one is set
    latency_budget: float | None


def compute_history(run: RunData) -> HistoryData | None:
    """None when there is nothing to scale a reference point from (no budget, no result)."""
    ref = reference_point(run.trials, run.meta, x="flops")
    if ref is None:
        return None
    ref_x, ref_y = ref
    hv = hypervolume_history(run.trials, x="flops", ref_x=ref_x, ref_y=ref_y)
    flops_budget = run_budget(run.meta, "flops")
    lat_budget = run_budget(run.meta, "latency_ms")
    return HistoryData(
        hypervolume=hv,
        hypervolume_share=hv.value / (ref_x * (100.0 - ref_y)),
        ref_x=ref_x, ref_y=ref_y,
        best_flops=best_under_budget_history(run.trials, budget=flops_budget, x="flops"),
        flops_budget=flops_budget,
        best_latency=(best_under_budget_history(run.trials, budget=lat_budget, x="latency_ms")
                      if lat_budget is not None else None),
        latency_budget=lat_budget,
    )


class DesignData(NamedTuple):
    """Design choices of the plotted candidates against top1 and FLOPs."""

    points: pd.DataFrame  # usable candidates (top1 and FLOPs known)
    variables: tuple[tuple[str, str], ...]  # (column, label) taking at least two values
    constant: tuple[tuple[str, str, float], ...]  # (column, label, value) the same for all
    spearman: dict[tuple[str, str], float]  # (variable, "top1"|"flops") -> rank correlation


def compute_design(run: RunData) -> DesignData:
    t = run.trials
    cand = t[t["kind"] == "candidate"]
    pts = cand[usable(cand, x="flops")]
    variables = tuple((c, label) for c, label in DESIGN_VARIABLES if pts[c].nunique() >= 2)
    constant = tuple((c, label, float(pts[c].dropna().iloc[0])) for c, label in DESIGN_VARIABLES
                     if pts[c].nunique() == 1)
    rho: dict[tuple[str, str], float] = {}
    full = pts[pts["status"] == "finished"]  # top1 after all epochs: ASHA-stopped ones excluded
    for c, _ in variables:
        for target in ("top1", "flops"):
            pair = (full if target == "top1" else pts)[[c, target]].dropna()
            if len(pair) < 3 or pair[c].nunique() < 2 or pair[target].nunique() < 2:
                rho[(c, target)] = math.nan
            else:
                rho[(c, target)] = float(pair[c].corr(pair[target], method="spearman"))
    return DesignData(points=pts, variables=variables, constant=constant, spearman=rho)


class Summary(NamedTuple):
    """The report's header: settings from run.json and counts from trials.csv."""

    settings: tuple[tuple[str, str], ...]  # (label, value) of the known run.json keys present
    n_candidates: int  # candidate rows (finished + early_stopped + failed)
    n_finished: int
    n_early_stopped: int
    n_failed: int
    n_references: int
    trials_requested: int | None
    rejected_over_budget: int | None
    latency_sources: tuple[str, ...]  # distinct latency_source values of rows with a latency
    # candidates in the lower, middle and upper third of the FLOPs range from the space's
    # cheapest network to the budget, in log-FLOPs (how the proposals spread); None if unknown
    flops_thirds: tuple[int, int, int] | None = None


def _first(meta: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in meta and meta[k] not in (None, ""):
            return meta[k]
    return None


def _setting_text(label: str, value: Any, dataset: Any) -> str:
    if label == "FLOPs budget" and isinstance(value, (int, float)) and math.isfinite(value):
        return f"{format_flops(value)} MACs ({int(value):,})"
    if label == "latency budget" and isinstance(value, (int, float)):
        return f"{value:g} ms"
    if label == "proxy preset" and isinstance(value, dict) and \
            _int_or_none(value.get("epochs")) is not None:
        changed = [str(c) for c in value.get("overridden") or []]
        shown = ProxyPreset(epochs=_int_or_none(value["epochs"]),
                            max_train=_int_or_none(value.get("max_train")),
                            resolution=_int_or_none(value.get("resolution")))
        return (f"{value.get('preset')}: {describe(shown, data_kind(str(dataset)))}"
                + (f" ({', '.join('--' + c.replace('_', '-') for c in changed)} set by option)"
                   if changed else ""))
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def compute_summary(run: RunData) -> Summary:
    t = run.trials
    cand = t[t["kind"] == "candidate"]
    dataset = run.meta.get("dataset")
    settings = tuple((label, _setting_text(label, v, dataset)) for label, keys in _RUN_SETTINGS
                     if (v := _first(run.meta, keys)) is not None)
    timed = t[t["latency_ms"].notna() & (t["status"] != "failed")]
    sources = tuple(sorted({s for s in timed["latency_source"] if s}))
    return Summary(
        settings=settings,
        n_candidates=len(cand),
        n_finished=int((cand["status"] == "finished").sum()),
        n_early_stopped=int((cand["status"] == "early_stopped").sum()),
        n_failed=int((cand["status"] == "failed").sum()),
        n_references=int((t["kind"] == "reference").sum()),
        trials_requested=_int_or_none(_first(run.meta, _TRIALS_KEYS)),
        rejected_over_budget=_int_or_none(_first(run.meta, _REJECTED_KEYS)),
        latency_sources=sources,
        flops_thirds=flops_thirds(run),
    )


def flops_thirds(run: RunData) -> tuple[int, int, int] | None:
    """How many candidates lie in each third of [the space's cheapest network, the budget] in
    log-FLOPs (run.json's ``space_flops_range`` and ``budget_flops``); None without both."""
    span, budget = run.meta.get("space_flops_range"), run.meta.get("budget_flops")
    if not (isinstance(span, list) and span and isinstance(span[0], (int, float))
            and isinstance(budget, (int, float)) and 0 < span[0] < budget):
        return None
    flops = run.trials.loc[run.trials["kind"] == "candidate", "flops"].dropna()
    lo, hi = math.log(span[0]), math.log(budget)
    third = [min(2, max(0, int(3 * (math.log(f) - lo) / (hi - lo)))) for f in flops if f > 0]
    return (third.count(0), third.count(1), third.count(2))


def export_command(run_dir: str | os.PathLike, trial_id: str | None = None) -> str:
    """The shell command that exports ``trial_id`` of the run at ``run_dir``; the file it writes
    is named after the trial (letters, digits, ``_.-`` only, no leading dot). Without a trial,
    the command with placeholders (``--trial ID --out FILE``)."""
    if trial_id is None:
        return f"python -m search export {shlex.quote(str(run_dir))} --trial ID --out FILE"
    out = f"{safe_name(trial_id)}.json"
    return (f"python -m search export {shlex.quote(str(run_dir))} --trial "
            f"{shlex.quote(trial_id)} --out {shlex.quote(out)}")


PARETO_COLUMNS = ("trial_id", "status", "top1", "flops", "params", "latency_ms",
                  "latency_source", "pareto_flops", "pareto_latency", "describe",
                  "export_command", "arch")


def pareto_table(run: RunData) -> pd.DataFrame:
    """Candidates on the top1/FLOPs or the top1/latency front (flags say which), by FLOPs."""
    t = run.trials
    on_flops = set(pareto_front(t, x="flops")["trial_id"])
    on_latency = set(pareto_front(t, x="latency_ms")["trial_id"])
    rows = t[(t["kind"] == "candidate") & t["trial_id"].isin(on_flops | on_latency)]
    rows = rows.sort_values(["flops", "top1", "trial_id"], ascending=[True, False, True],
                            kind="stable")
    out = pd.DataFrame({
        "trial_id": rows["trial_id"],
        "status": rows["status"],
        "top1": rows["top1"],
        "flops": rows["flops"].astype("Int64"),
        "params": rows["params"].astype("Int64"),
        "latency_ms": rows["latency_ms"],
        "latency_source": rows["latency_source"],
        "pareto_flops": rows["trial_id"].isin(on_flops),
        "pareto_latency": rows["trial_id"].isin(on_latency),
        "describe": rows["describe"],
        "export_command": [export_command(run.path, tid) for tid in rows["trial_id"]],
        "arch": rows["arch"],
    }, columns=list(PARETO_COLUMNS))
    return out.reset_index(drop=True)
