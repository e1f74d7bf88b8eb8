"""Where the hand design stands: each reference model against the best candidate at no more
cost, and the hypervolume the search added to the references' own front.

Definitions (the project's ``SCIENCE.md``):

- a reference R is **matched** when a candidate that finished every proxy epoch has
  ``cost <= R.cost`` and ``top1 >= R.top1``; R's **gap** is the best such candidate's top1
  minus R's (negative: the hand design still wins at that cost; NaN: no candidate that cheap);
- a candidate within :data:`NEIGHBOUR_EDITS` edits of a reference that is a point of the space
  (:func:`space.search_space.edits`) is that reference's **neighbour**, reported apart from new
  designs: the gap is given over all candidates and over non-neighbours;
- **hypervolume gained**: ``HV(candidates + references) / HV(references)`` on the top1/FLOPs
  plane up to the reference point (1.0: the search added nothing to the hand design's front);
- each gap carries its standard error (:mod:`results.noise`: paired on the same held-out images
  where both networks' hits are recorded) and a verdict: ``beats``, ``ties`` (matched within
  noise) or ``trails``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from results.noise import Noise, verdict
from results.pareto import hypervolume
from results.runfolder import parse_arch_cell
from results.table import competing
from space import ArchitectureError
from space.search_space import edits

__all__ = ["NEIGHBOUR_EDITS", "Standing", "neighbours", "reference_standing",
           "hypervolume_gain"]

NEIGHBOUR_EDITS = 2


class Standing(NamedTuple):
    """One reference model against the candidates at no more cost."""

    reference: str  # registered name
    cost: str  # "flops" (MACs at 224x224) or "latency_ms"
    ref_cost: float
    ref_top1: float  # proxy top-1 %
    best: str | None  # trial id of the best candidate at no more cost (None: none that cheap)
    best_top1: float
    best_cost: float
    gap: float  # best_top1 - ref_top1, points of top-1 (NaN without a candidate)
    best_new: str | None  # the same among candidates that are no reference's neighbour
    gap_new: float
    gap_se: float = math.nan  # standard error of gap, points (NaN: noise not known)
    gap_new_se: float = math.nan

    @property
    def verdict(self) -> str:
        """``beats``, ``ties`` (matched within noise), ``trails`` or ``unknown``."""
        return verdict(self.gap, self.gap_se)

    @property
    def verdict_new(self) -> str:
        return verdict(self.gap_new, self.gap_new_se)

    @property
    def matched(self) -> bool:
        return self.gap >= 0

    @property
    def matched_new(self) -> bool:
        return self.gap_new >= 0


def neighbours(trials: pd.DataFrame, *, max_edits: int = NEIGHBOUR_EDITS) -> dict[str, str]:
    """Candidate trial id -> the name of the reference it is within ``max_edits`` edits of
    (the nearest one), for candidates near a GhostNet reference; others are left out."""
    refs = []
    for r in trials[trials["kind"] == "reference"].itertuples(index=False):
        try:
            refs.append((r.name or r.trial_id, parse_arch_cell(r.arch)))
        except ArchitectureError:
            continue
    out: dict[str, str] = {}
    for r in trials[trials["kind"] == "candidate"].itertuples(index=False):
        try:
            arch = parse_arch_cell(r.arch)
        except ArchitectureError:
            continue
        near = [(n, name) for name, ref in refs if (n := edits(arch, ref)) is not None
                and n <= max_edits]
        if near:
            out[r.trial_id] = min(near)[1]
    return out


def _best(pool: pd.DataFrame, cost: str, limit: float) -> pd.Series | None:
    rows = pool[pool[cost] <= limit]
    if rows.empty:
        return None
    return rows.sort_values(["top1", cost, "trial_id"], ascending=[False, True, True],
                            kind="stable").iloc[0]


def _se(best: pd.Series | None, ref, noise: Noise | None) -> float:
    if best is None:
        return math.nan
    if "top1_se" in best.index:  # figures with their own errors (results.confirm)
        return math.hypot(float(best["top1_se"]), float(ref.top1_se))
    if noise is None:
        return math.nan
    return noise.difference_se(float(best["top1"]), float(ref.top1),
                               a_hits=str(best.get("hits", "")), b_hits=str(ref.hits))


def reference_standing(trials: pd.DataFrame, *, cost: str = "flops",
                       near: dict[str, str] | None = None,
                       noise: Noise | None = None) -> list[Standing]:
    """Each reference with a finished result and a ``cost`` against the candidates (that
    finished every epoch) at no more ``cost``; ``near``: :func:`neighbours` of the candidates
    (computed when not given); ``noise``: the run's (:func:`results.noise.run_noise`), for each
    gap's standard error, unless ``trials`` carries each figure's own (``top1_se``)."""
    near = neighbours(trials) if near is None else near
    cands = trials[(trials["kind"] == "candidate") & competing(trials, x=cost)]
    new = cands[~cands["trial_id"].isin(list(near))]
    refs = trials[(trials["kind"] == "reference") & competing(trials, x=cost)]
    out = []
    for r in refs.sort_values([cost, "trial_id"], kind="stable").itertuples(index=False):
        limit, top1 = float(getattr(r, cost)), float(r.top1)
        best, best_new = _best(cands, cost, limit), _best(new, cost, limit)
        out.append(Standing(
            reference=r.name or r.trial_id, cost=cost, ref_cost=limit, ref_top1=top1,
            best=None if best is None else str(best["trial_id"]),
            best_top1=math.nan if best is None else float(best["top1"]),
            best_cost=math.nan if best is None else float(best[cost]),
            gap=(math.nan if best is None else float(best["top1"])) - top1,
            best_new=None if best_new is None else str(best_new["trial_id"]),
            gap_new=(math.nan if best_new is None else float(best_new["top1"])) - top1,
            gap_se=_se(best, r, noise), gap_new_se=_se(best_new, r, noise)))
    return out


def hypervolume_gain(trials: pd.DataFrame, *, ref_x: float, ref_y: float = 0.0) -> float:
    """``HV(candidates + references) / HV(references)`` on top1 against FLOPs, both finished
    every epoch; NaN when the references span no hypervolume (none finished, or none within
    ``ref_x``)."""
    ok = competing(trials, x="flops")
    refs = trials[ok & (trials["kind"] == "reference")]
    both = trials[ok]
    base = hypervolume(refs["flops"].to_numpy(np.float64), refs["top1"].to_numpy(np.float64),
                       ref_x=ref_x, ref_y=ref_y)
    if base <= 0:
        return math.nan
    return hypervolume(both["flops"].to_numpy(np.float64), both["top1"].to_numpy(np.float64),
                       ref_x=ref_x, ref_y=ref_y) / base
