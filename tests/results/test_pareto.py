"""Pareto sets and hypervolume against Optuna's own and against brute force."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState

from results.pareto import (
    best_under_budget_history,
    hypervolume,
    hypervolume_history,
    pareto_front,
    pareto_mask,
    reference_point,
    trial_order,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- independent computations -----------------------------------------------------------------


def brute_mask(cost, gain):
    """O(n^2) by the definition."""
    n = len(cost)
    ok = [math.isfinite(cost[i]) and math.isfinite(gain[i]) for i in range(n)]
    out = []
    for i in range(n):
        if not ok[i]:
            out.append(False)
            continue
        dominated = any(
            ok[j] and cost[j] <= cost[i] and gain[j] >= gain[i]
            and (cost[j] < cost[i] or gain[j] > gain[i]) for j in range(n))
        out.append(not dominated)
    return np.array(out, dtype=bool)


def optuna_mask(cost, gain):
    """Optuna's best_trials for (maximise gain, minimise cost); NaN rows are failed trials."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for c, g in zip(cost, gain, strict=True):
        if math.isfinite(c) and math.isfinite(g):
            study.add_trial(optuna.trial.create_trial(values=[g, c], distributions={}, params={}))
        else:
            study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, distributions={},
                                                      params={}))
    best = {t.number for t in study.best_trials}
    return np.array([i in best for i in range(len(cost))], dtype=bool)


def optuna_hv(xs, ys, ref_x, ref_y):
    """Optuna minimises: losses (x, -y) against (ref_x, -ref_y), points beyond it dropped."""
    pts = [(x, -y) for x, y in zip(xs, ys, strict=True)
           if math.isfinite(x) and math.isfinite(y) and x <= ref_x and y >= ref_y]
    if not pts:
        return 0.0
    return compute_hypervolume(np.array(pts, dtype=float), np.array([ref_x, -ref_y], dtype=float))


def brute_hv(xs, ys, ref_x, ref_y):
    """Union of rectangles [x, ref_x] x [ref_y, y] by slabs over every distinct x."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True)
           if math.isfinite(x) and math.isfinite(y)]
    edges = sorted({min(max(x, -1e300), ref_x) for x, _ in pts} | {ref_x})
    area = 0.0
    for left, right in itertools.pairwise(edges):
        top = max((y for x, y in pts if x <= left), default=ref_y)
        area += (right - left) * max(top - ref_y, 0.0)
    return area


def random_points(rng: random.Random, n: int, *, nan_share: float = 0.1, grid: int | None = None):
    xs, ys = [], []
    for _ in range(n):
        if grid:  # coarse values: many ties and duplicates
            x, y = float(rng.randint(1, grid)), float(rng.randint(1, grid))
        else:
            x, y = rng.uniform(1e6, 6e8), rng.uniform(0, 100)
        if rng.random() < nan_share:
            x, y = (math.nan, y) if rng.random() < 0.5 else (x, math.nan)
        xs.append(x)
        ys.append(y)
    return xs, ys


# -- pareto_mask ------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [None, 4, 10])
def test_mask_matches_optuna_and_brute_force_on_random_points(grid):
    rng = random.Random(grid or 0)
    for n in (1, 2, 3, 7, 25, 60):
        for _ in range(4):
            xs, ys = random_points(rng, n, grid=grid)
            ours = pareto_mask(xs, ys)
            np.testing.assert_array_equal(ours, brute_mask(xs, ys))
            np.testing.assert_array_equal(ours, optuna_mask(xs, ys))


TRICKY = {
    "one point": ([5.0], [50.0]),
    "exact duplicates of the best": ([5.0, 5.0, 7.0], [50.0, 50.0, 40.0]),
    "duplicates of a dominated point": ([5.0, 6.0, 6.0], [50.0, 40.0, 40.0]),
    "same cost, lower gain is dominated": ([5.0, 5.0], [50.0, 49.0]),
    "same gain, higher cost is dominated": ([5.0, 6.0], [50.0, 50.0]),
    "all equal": ([3.0] * 4, [1.0] * 4),
    "all NaN": ([math.nan, math.nan], [math.nan, math.nan]),
    "NaN rows of failed trials": ([1.0, math.nan, 3.0, 2.0], [10.0, 99.0, 30.0, math.nan]),
    "inf is not a value": ([math.inf, 1.0], [100.0, 1.0]),
    "a chain": ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
    "one dominates all": ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]),
    "zero and negative": ([0.0, -1.0, 0.0], [0.0, -5.0, 0.0]),
}


@pytest.mark.parametrize("case", sorted(TRICKY))
def test_mask_on_tricky_inputs(case):
    xs, ys = TRICKY[case]
    ours = pareto_mask(xs, ys)
    np.testing.assert_array_equal(ours, brute_mask(xs, ys))
    finite = [math.isfinite(x) and math.isfinite(y) for x, y in zip(xs, ys, strict=True)]
    if not any(math.isinf(v) for v in xs + ys):  # Optuna accepts no inf values
        np.testing.assert_array_equal(ours, optuna_mask(xs, ys))
    assert not ours[~np.array(finite)].any()


def test_mask_keeps_every_duplicate_of_a_front_point():
    assert pareto_mask([5, 5, 5], [50, 50, 50]).tolist() == [True, True, True]


def test_mask_empty_and_shape_errors():
    assert pareto_mask([], []).tolist() == []
    with pytest.raises(ValueError, match="lengths differ"):
        pareto_mask([1, 2], [1])
    with pytest.raises(ValueError, match="cost"):
        pareto_mask([[1, 2]], [[1, 2]])


# -- hypervolume ------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [None, 5])
def test_hypervolume_matches_optuna_and_brute_force(grid):
    rng = random.Random(7 + (grid or 0))
    for n in (1, 2, 5, 20, 50):
        for _ in range(5):
            xs, ys = random_points(rng, n, grid=grid)
            finite_x = [x for x in xs if math.isfinite(x)] or [1.0]
            # sometimes a reference point that cuts points off (beyond it in x or y)
            ref_x = rng.choice([1.1 * max(finite_x), float(np.median(finite_x))])
            ref_y = rng.choice([0.0, 1.0 if grid else 30.0])
            ours = hypervolume(xs, ys, ref_x=ref_x, ref_y=ref_y)
            assert ours == pytest.approx(optuna_hv(xs, ys, ref_x, ref_y), rel=1e-9, abs=1e-6)
            assert ours == pytest.approx(brute_hv(xs, ys, ref_x, ref_y), rel=1e-9, abs=1e-6)


def test_hypervolume_tricky_inputs():
    assert hypervolume([], [], ref_x=10, ref_y=0) == 0.0
    assert hypervolume([math.nan], [50], ref_x=10, ref_y=0) == 0.0
    assert hypervolume([2.0], [50.0], ref_x=10, ref_y=0) == pytest.approx(8 * 50)
    # duplicates count once
    assert hypervolume([2.0, 2.0], [50.0, 50.0], ref_x=10, ref_y=0) == pytest.approx(400)
    # beyond the reference point (cost at/over ref_x, or gain at/under ref_y): nothing
    assert hypervolume([10.0, 12.0, 3.0], [90.0, 99.0, 0.0], ref_x=10, ref_y=0) == 0.0
    # a dominated point adds nothing
    assert hypervolume([2.0, 4.0], [50.0, 40.0], ref_x=10, ref_y=0) == pytest.approx(400)
    # staircase: [2,10]x[0,50] u [5,10]x[0,80] = 8*50 + 5*30
    assert hypervolume([2.0, 5.0], [50.0, 80.0], ref_x=10, ref_y=0) == pytest.approx(550)
    with pytest.raises(ValueError, match="ref_x"):
        hypervolume([1.0], [1.0], ref_x=math.nan, ref_y=0)


# -- frames -----------------------------------------------------------------------------------


def frame(rows):
    cols = ["trial_id", "kind", "status", "top1", "flops", "latency_ms", "number", "finished_at"]
    return pd.DataFrame([dict(zip(cols, r, strict=True)) for r in rows], columns=cols)


NAN = math.nan
DF = frame([
    ("c0001", "candidate", "finished", 60.0, 100e6, 5.0, 0, "2025-01-01T00:03:00+00:00"),
    ("c0002", "candidate", "failed", NAN, 50e6, NAN, 1, "2025-01-01T00:01:00+00:00"),
    ("c0003", "candidate", "finished", 60.0, 100e6, 6.0, 2, "2025-01-01T00:02:00+00:00"),
    ("c0004", "candidate", "early_stopped", 50.0, 80e6, 4.0, 3, "2025-01-01T00:05:00+00:00"),
    ("c0005", "candidate", "finished", 40.0, 90e6, NAN, 4, "2025-01-01T00:04:00+00:00"),
    ("c0006", "candidate", "finished", NAN, 10e6, 1.0, 5, ""),
    ("ref-a", "reference", "finished", 99.0, 1e6, 0.5, NAN, "2025-01-01T00:06:00+00:00"),
])


def test_pareto_front_of_a_table():
    front = pareto_front(DF)
    # failed c0002, early-stopped c0004 and NaN-top1 c0006 excluded, reference excluded,
    # duplicates c0001/c0003 kept
    assert list(front["trial_id"]) == ["c0005", "c0001", "c0003"]
    assert list(pareto_front(DF, kind=None)["trial_id"]) == ["ref-a"]
    lat = pareto_front(DF, x="latency_ms")
    assert list(lat["trial_id"]) == ["c0001"]  # c0005 has no latency, c0004 stopped early
    with pytest.raises(ValueError, match="no column"):
        pareto_front(DF, x="nope")


def test_pareto_front_matches_optuna_on_a_random_table():
    rng = random.Random(3)
    rows = []
    for i in range(80):
        status = rng.choice(["finished"] * 6 + ["failed", "early_stopped"])
        top1 = NAN if status == "failed" else float(rng.randint(30, 40))
        rows.append((f"c{i:04d}", "candidate", status, top1, float(rng.randint(1, 12)) * 1e7,
                     NAN, i, ""))
    df = frame(rows)
    ours = set(pareto_front(df)["trial_id"])
    cost = [f if s != "failed" else NAN for f, s in zip(df["flops"], df["status"], strict=True)]
    expected = {t for t, m in zip(df["trial_id"], optuna_mask(cost, list(df["top1"])),
                                  strict=True) if m}
    assert ours == expected


def test_reference_point_budget_or_scaled_max():
    assert reference_point(DF, {"budget_flops": 300_000_000}) == (300e6, 0.0)
    assert reference_point(DF, {}) == pytest.approx((1.1 * 100e6, 0.0))
    assert reference_point(DF, {"latency_budget_ms": 12}, x="latency_ms") == (12.0, 0.0)
    assert reference_point(DF, {"budget_flops": None}) == pytest.approx((110e6, 0.0))
    assert reference_point(DF.iloc[:0], {}) is None
    assert reference_point(DF.iloc[:0], {"budget_flops": 5e6}) == (5e6, 0.0)


def test_trial_order_by_time_or_number():
    by_time = list(trial_order(DF)["trial_id"])
    assert by_time == ["c0002", "c0003", "c0001", "c0005", "c0004", "c0006"]  # no time: last
    assert list(trial_order(DF, by="number")["trial_id"]) == [f"c000{i}" for i in range(1, 7)]
    with pytest.raises(ValueError, match="by"):
        trial_order(DF, by="seconds")
    # results that came in within one timestamp keep the table's (arrival) order, not numbers'
    tied = DF.assign(finished_at=["2025-01-01T00:01:00.000+00:00"] * len(DF)).iloc[::-1]
    assert list(trial_order(tied)["trial_id"]) == [f"c000{i}" for i in range(6, 0, -1)]


def test_histories_equal_recomputation_on_every_prefix():
    rng = random.Random(11)
    rows = []
    for i in range(40):
        failed = rng.random() < 0.15
        rows.append((f"c{i:04d}", "candidate", "failed" if failed else "finished",
                     NAN if failed else rng.uniform(20, 80), rng.uniform(1e7, 4e8), NAN, i,
                     f"2025-01-01T{i // 60:02d}:{i % 60:02d}:00+00:00"))
    df = frame(rows)
    ref_x = 3e8
    hv = hypervolume_history(df, ref_x=ref_x)
    best = best_under_budget_history(df, budget=ref_x)
    assert hv.trial_id == tuple(df["trial_id"]) and list(hv.step) == list(range(1, 41))
    for k in range(1, 41):
        prefix = df.iloc[:k]
        ok = prefix["status"] != "failed"
        assert hv.value[k - 1] == pytest.approx(
            optuna_hv(list(prefix["flops"][ok]), list(prefix["top1"][ok]), ref_x, 0.0))
        within = prefix[ok & (prefix["flops"] <= ref_x)]["top1"]
        if within.empty:
            assert math.isnan(best.value[k - 1])
        else:
            assert best.value[k - 1] == within.max()
    assert np.all(np.diff(hv.value) >= 0)


def test_histories_of_no_trials():
    empty = DF.iloc[:0]
    assert len(hypervolume_history(empty, ref_x=1.0).value) == 0
    assert len(best_under_budget_history(empty).value) == 0
