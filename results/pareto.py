"""Pareto fronts and 2-D hypervolume for maximise top1 / minimise cost (FLOPs or latency).

Conventions (the report states them too):

- **Domination.** ``a`` dominates ``b`` when ``cost_a <= cost_b`` and ``gain_a >= gain_b`` with at
  least one strict. Rows whose cost or gain is NaN/inf, and failed trials, are never on a front.
- **Ties.** Exact duplicates (same cost and same gain) of a non-dominated point are *all* kept:
  they are different architectures with the same figures, both valid choices, and dropping one
  would be arbitrary. This is also what Optuna's ``study.best_trials`` does.
- **Hypervolume** is the area dominated by the points and bounded by a reference point
  ``(ref_x, ref_y)``: the union of the rectangles ``[x_i, ref_x] x [ref_y, y_i]``. Points with
  ``x >= ref_x`` or ``y <= ref_y`` add nothing. The default reference point
  (:func:`reference_point`) is ``ref_x`` = the run's budget (``budget_flops`` /
  ``latency_budget_ms`` in run.json) when set, else 1.1 x the largest cost among the usable
  candidates; ``ref_y`` = 0 % top1. A history keeps one reference point for all its steps.
- **Trial order** for histories is ``finished_at`` (equal times keep trials.csv's order, which is
  the order the results came in), or Optuna ``number`` first when asked; failed trials take a
  step (they are spent effort) but add nothing.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from results.table import competing, usable

__all__ = ["pareto_mask", "pareto_front", "hypervolume", "reference_point", "trial_order",
           "nondominated_fronts", "crowding_distance",
           "History", "hypervolume_history", "best_under_budget_history", "BUDGET_KEYS",
           "run_budget"]

# the run.json key holding the budget of each cost column
BUDGET_KEYS = {"flops": "budget_flops", "latency_ms": "latency_budget_ms"}


def _as_float_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    return arr


def pareto_mask(cost: Any, gain: Any) -> np.ndarray:
    """Boolean mask of the non-dominated points (minimise ``cost``, maximise ``gain``).

    Points with a non-finite cost or gain are False. Exact duplicates of a non-dominated point
    are all True. O(n log n): sort by cost, then sweep the best gain seen at strictly lower cost.
    """
    cost = _as_float_array(cost, "cost")
    gain = _as_float_array(gain, "gain")
    if cost.shape != gain.shape:
        raise ValueError(f"cost and gain: lengths differ ({cost.size} != {gain.size})")
    mask = np.zeros(cost.size, dtype=bool)
    valid = np.flatnonzero(np.isfinite(cost) & np.isfinite(gain))
    if valid.size == 0:
        return mask
    c, g = cost[valid], gain[valid]
    order = np.lexsort((-g, c))  # by cost ascending, then gain descending
    best_lower = -math.inf  # best gain among points of strictly lower cost
    i = 0
    while i < order.size:
        j = i
        while j < order.size and c[order[j]] == c[order[i]]:
            j += 1
        group = order[i:j]  # equal cost; the first has the group's best gain
        top = g[group[0]]
        if top > best_lower:  # otherwise a cheaper point is at least as good
            mask[valid[group[g[group] == top]]] = True
        best_lower = max(best_lower, top)
        i = j
    return mask


def pareto_front(df: pd.DataFrame, *, x: str = "flops", y: str = "top1",
                 kind: str | None = "candidate") -> pd.DataFrame:
    """The non-dominated rows of ``df`` for maximise ``y`` / minimise ``x``, sorted by ``x``.

    Only rows of ``kind`` (``None``: every row) that finished every epoch, with finite ``x`` and
    ``y``, compete (see :func:`results.table.competing`).
    """
    for col in (x, y):
        if col not in df.columns:
            raise ValueError(f"x/y: no column {col!r} in the table")
    rows = df if kind is None else df[df["kind"] == kind]
    rows = rows[competing(rows, x=x, y=y)]
    mask = pareto_mask(rows[x].to_numpy(dtype=np.float64), rows[y].to_numpy(dtype=np.float64))
    front = rows[mask]
    return front.sort_values([x, y], ascending=[True, False], kind="stable")


def hypervolume(front_x: Any, front_y: Any, *, ref_x: float, ref_y: float) -> float:
    """Exact 2-D hypervolume (area) dominated by the points for minimise x / maximise y.

    Any points may be passed (the front is taken here); non-finite ones are ignored, and points
    not strictly better than the reference point in both coordinates contribute nothing.
    """
    if not (math.isfinite(ref_x) and math.isfinite(ref_y)):
        raise ValueError(f"ref_x/ref_y: expected finite numbers, got ({ref_x}, {ref_y})")
    xs = _as_float_array(front_x, "front_x")
    ys = _as_float_array(front_y, "front_y")
    if xs.shape != ys.shape:
        raise ValueError(f"front_x and front_y: lengths differ ({xs.size} != {ys.size})")
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs < ref_x) & (ys > ref_y)
    xs, ys = xs[keep], ys[keep]
    if xs.size == 0:
        return 0.0
    on = pareto_mask(xs, ys)
    order = np.argsort(xs[on], kind="stable")
    fx, fy = xs[on][order], ys[on][order]  # x ascending, y ascending along a front
    # Slabs between consecutive front x: from fx[i] to the next x (or ref_x) at height fy[i].
    right = np.append(fx[1:], ref_x)
    return float(np.sum((right - fx) * (fy - ref_y)))


def reference_point(df: pd.DataFrame, meta: dict[str, Any] | None = None, *, x: str = "flops",
                    y: str = "top1") -> tuple[float, float] | None:
    """The default reference point ``(ref_x, ref_y)`` (see the module docstring).

    ``None`` when there is neither a budget nor any usable candidate to scale from.
    """
    budget = run_budget(meta, x)
    if budget is not None:
        return budget, 0.0
    rows = df[(df["kind"] == "candidate") & usable(df, x=x, y=y)] if len(df) else df
    if len(rows) == 0:
        return None
    top = float(rows[x].max())
    return (1.1 * top if top > 0 else 1.0), 0.0


def run_budget(meta: dict[str, Any] | None, x: str) -> float | None:
    """The run.json budget of cost column ``x`` (MACs or ms); None if unset or not positive."""
    key = BUDGET_KEYS.get(x)
    value = (meta or {}).get(key) if key else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def trial_order(df: pd.DataFrame, *, by: str = "finished_at") -> pd.DataFrame:
    """Candidates in the order they were run: ``by="finished_at"`` (equal times keep the table's
    row order: trials.csv appends each result as it comes in) or ``by="number"`` (then
    finished_at, trial id). Unknown times/numbers go last."""
    if by not in ("finished_at", "number"):
        raise ValueError(f"by: got {by!r}, expected 'finished_at' or 'number'")
    rows = df[df["kind"] == "candidate"]
    keys = pd.DataFrame({
        "t": pd.to_datetime(rows["finished_at"].where(rows["finished_at"] != ""),
                            errors="coerce", utc=True, format="ISO8601"),
        "n": pd.to_numeric(rows["number"], errors="coerce"),
        "id": rows["trial_id"].astype(str),
    }, index=rows.index)
    cols = ["t"] if by == "finished_at" else ["n", "t", "id"]
    order = keys.sort_values(cols, na_position="last", kind="stable").index
    return rows.loc[order]


class History(NamedTuple):
    """A quantity after each trial, in trial order (step 1 = after the first trial)."""

    step: np.ndarray  # 1..n
    trial_id: tuple[str, ...]
    value: np.ndarray  # NaN until defined


def hypervolume_history(df: pd.DataFrame, *, x: str = "flops", y: str = "top1", ref_x: float,
                        ref_y: float = 0.0, by: str = "finished_at") -> History:
    """Hypervolume of the candidates finished so far, after each candidate trial."""
    rows = trial_order(df, by=by)
    ok = competing(rows, x=x, y=y).to_numpy()
    xs = np.where(ok, rows[x].to_numpy(dtype=np.float64), np.nan)
    ys = np.where(ok, rows[y].to_numpy(dtype=np.float64), np.nan)
    values = np.empty(len(rows))
    # Only the running front matters: carry it instead of recomputing from every prefix.
    fx = np.empty(0)
    fy = np.empty(0)
    for i in range(len(rows)):
        if np.isfinite(xs[i]):
            fx, fy = np.append(fx, xs[i]), np.append(fy, ys[i])
            on = pareto_mask(fx, fy)
            fx, fy = fx[on], fy[on]
        values[i] = hypervolume(fx, fy, ref_x=ref_x, ref_y=ref_y)
    return History(np.arange(1, len(rows) + 1), tuple(rows["trial_id"]), values)


def best_under_budget_history(df: pd.DataFrame, *, budget: float | None = None,
                              x: str = "flops", y: str = "top1",
                              by: str = "finished_at") -> History:
    """Best ``y`` so far among candidates with ``x <= budget`` (every usable one if ``budget`` is
    None), after each candidate trial; NaN until one qualifies."""
    rows = trial_order(df, by=by)
    ok = competing(rows, x=x, y=y).to_numpy()
    if budget is not None:
        ok = ok & (rows[x].to_numpy(dtype=np.float64) <= budget)
    ys = np.where(ok, rows[y].to_numpy(dtype=np.float64), -np.inf)
    best = np.maximum.accumulate(ys) if len(ys) else ys
    best = np.where(np.isneginf(best), np.nan, best)
    return History(np.arange(1, len(rows) + 1), tuple(rows["trial_id"]), best)


def nondominated_fronts(points: Any) -> list[list[int]]:
    """Non-dominated sorting of points in any number of objectives, all to be maximised:
    the indices of the first front (no point dominates them), then of the second (dominated
    only by the first), and so on (Deb et al., NSGA-II, 2002). Points with a non-finite value
    come last, in one front of their own."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError(f"points: expected a 2-D array (points x objectives), got {pts.shape}")
    n = len(pts)
    finite = np.isfinite(pts).all(axis=1)
    idx = [i for i in range(n) if finite[i]]
    # dominated_by[i]: how many points dominate i; beats[i]: the points i dominates
    dominated_by = {i: 0 for i in idx}
    beats: dict[int, list[int]] = {i: [] for i in idx}
    for a in idx:
        for b in idx:
            if a != b and np.all(pts[a] >= pts[b]) and np.any(pts[a] > pts[b]):
                beats[a].append(b)
                dominated_by[b] += 1
    fronts: list[list[int]] = []
    current = [i for i in idx if dominated_by[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for a in current:
            for b in beats[a]:
                dominated_by[b] -= 1
                if dominated_by[b] == 0:
                    nxt.append(b)
        current = sorted(nxt)
    rest = [i for i in range(n) if not finite[i]]
    if rest:
        fronts.append(rest)
    return fronts


def crowding_distance(points: Any) -> np.ndarray:
    """NSGA-II's crowding distance of each point of one front: the sum over objectives of the
    gap between its two neighbours along that objective, divided by the objective's range;
    the extremes of every objective get infinity, so a front's ends are always preferred."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for j in range(pts.shape[1]):
        order = np.argsort(pts[:, j], kind="stable")
        lo, hi = pts[order[0], j], pts[order[-1], j]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (pts[order[k + 1], j] - pts[order[k - 1], j]) / (hi - lo)
    return dist
