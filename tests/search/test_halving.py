"""The successive-halving policy on constructed rungs: what each rule keeps and stops."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from results.pareto import crowding_distance, nondominated_fronts
from search.halving import HalvingPolicy, milestones


def _policy(objectives=("top1", "flops"), **options) -> HalvingPolicy:
    return HalvingPolicy(rung_epochs=(1,), objectives=objectives, **options)


def _fill(policy: HalvingPolicy, points: dict[str, tuple], comparators=()) -> None:
    for tid, values in points.items():
        policy.record(tid, 1, values, comparator=tid in comparators)


def test_rung_epochs_are_grace_times_powers_of_eta_below_the_last_epoch():
    assert milestones(3) == (1,)
    assert milestones(5) == (1, 3)
    assert milestones(20) == (5, 15)
    assert milestones(1) == ()


def test_a_cheap_network_on_the_front_goes_on_where_single_metric_asha_stops_it():
    # three larger networks learn faster in epoch 1; the cheap one trails them on top1 alone
    earlier = {"c1": (80.0, 150e6), "c2": (78.0, 120e6), "c3": (76.0, 100e6)}
    single, pareto = _policy(("top1",)), _policy()
    _fill(single, {k: v[:1] for k, v in earlier.items()})
    _fill(pareto, earlier)
    assert single.record("cheap", 1, (60.0,)) is False
    assert pareto.record("cheap", 1, (60.0, 25e6)) is True


def test_a_dominated_network_is_stopped():
    policy = _policy()
    _fill(policy, {"c1": (80.0, 50e6), "c2": (82.0, 90e6), "c3": (85.0, 140e6)})
    # more FLOPs than c1 and lower top1: dominated by c1
    assert policy.record("worse", 1, (70.0, 60e6)) is False


def test_the_papers_rule_stops_its_quota_in_a_rung_of_mutually_non_dominated_networks():
    policy = _policy(margin=None)
    # a front from cheap-and-weak to dear-and-strong, all non-dominated
    front = {f"c{i}": (60.0 + 4 * i, (20 + 30 * i) * 1e6) for i in range(6)}
    decisions = {tid: policy.record(tid, 1, v) for tid, v in front.items()}
    # a middle point arriving into a crowded front is stopped, although non-dominated
    assert policy.record("middle", 1, (71.0, 95e6)) is False
    assert decisions["c0"] and decisions["c1"]  # the first ones always fit the quota
    candidates = len(policy.rungs[1])
    kept = [t for t in policy.rungs[1] if policy.keeps(1, t)]
    assert len(kept) <= math.ceil(candidates / policy.eta) + 1  # ties only at the front's ends
    assert {"c0", "c5"} <= set(kept)  # the cheapest and the most accurate are kept


def test_references_compare_but_are_never_stopped_nor_counted_in_the_quota():
    policy = _policy()
    refs = {"ref-a": (90.0, 40e6), "ref-b": (92.0, 140e6)}
    for tid, v in refs.items():
        assert policy.record(tid, 1, v, comparator=True) is True
    # the first candidate would always go on in an empty rung; here a reference dominates it
    assert policy.record("c1", 1, (85.0, 45e6)) is True  # quota 1 of 1 candidate
    assert policy.record("c2", 1, (70.0, 50e6)) is False  # dominated by ref-a and c1
    # a worse reference is still never stopped
    assert policy.record("ref-c", 1, (10.0, 900e6), comparator=True) is True
    assert policy.ranking(1)["ref-a"][0] == 0


def test_latency_as_a_third_objective_keeps_a_fast_network():
    policy = _policy(("top1", "flops", "latency"))
    _fill(policy, {"c1": (80.0, 50e6, 12.0), "c2": (82.0, 60e6, 13.0), "c3": (84.0, 70e6, 14.0)})
    # dominated on top1 and FLOPs by c1, but the fastest: on the 3-D front, an extreme
    assert policy.record("fast", 1, (79.0, 55e6, 6.0)) is True
    # slower and worse than c1 on everything: stopped
    assert policy.record("slow", 1, (75.0, 55e6, 15.0)) is False


def test_failed_results_and_later_epochs_are_not_filed():
    policy = HalvingPolicy(rung_epochs=(1, 3), objectives=("top1", "flops"))
    assert policy.record("c1", 1, (math.nan, 10e6)) is True
    assert "c1" not in policy.rungs[1]
    assert policy.record("c2", 2, (50.0, 10e6)) is True  # past rung 1: filed there
    assert "c2" in policy.rungs[1] and "c2" not in policy.rungs[3]
    assert policy.record("c2", 2, (99.0, 10e6)) is True  # filed once; the first result stays
    assert policy.rungs[1]["c2"].values[0] == 50.0


def _dominates(a, b) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and a != b


def test_nondominated_fronts_agree_with_brute_force():
    rnd = random.Random(3)
    for _ in range(50):
        pts = [(rnd.randint(0, 6), rnd.randint(0, 6), rnd.randint(0, 6))
               for _ in range(rnd.randint(1, 12))]
        fronts = nondominated_fronts(pts)
        assert sorted(itertools.chain(*fronts)) == list(range(len(pts)))
        remaining = set(range(len(pts)))
        for front in fronts:
            top = {i for i in remaining
                   if not any(_dominates(pts[j], pts[i]) for j in remaining if j != i)}
            assert set(front) == top
            remaining -= set(front)


def test_crowding_distance_prefers_the_ends_and_the_lonely():
    d = crowding_distance([[0, 10], [1, 9], [2, 8], [9, 1], [10, 0]])
    assert math.isinf(d[0]) and math.isinf(d[4])
    assert d[2] > d[1]  # (2, 8) lies between (1, 9) and (9, 1): more room around it
    assert np.all(np.isinf(crowding_distance([[0, 1], [1, 0]])))


@pytest.mark.parametrize("objectives", [("flops",), ("top1", "speed")])
def test_objectives_are_checked(objectives):
    with pytest.raises(ValueError, match="objectives"):
        HalvingPolicy(rung_epochs=(1,), objectives=objectives)


def test_by_default_only_a_network_dominated_beyond_the_noise_is_stopped():
    # 450 held-out images: two results near 80% must differ by ~5.3 points to be told apart
    policy = _policy(held_out=450)
    assert 5.0 < policy.noise(80.0, 80.0) < 5.5
    front = {f"c{i}": (60.0 + 4 * i, (20 + 30 * i) * 1e6) for i in range(6)}
    _fill(policy, front)
    # non-dominated in a crowded front: the paper's quota would stop it; here it goes on
    assert policy.record("middle", 1, (71.0, 95e6)) is True
    # dominated by c2 (68%, 80M FLOPs) but only by 2 points: a tie, goes on
    assert policy.record("close", 1, (66.0, 85e6)) is True
    # dominated by c2 by 20 points: stopped (outside the quota)
    assert policy.record("far", 1, (48.0, 85e6)) is False


def test_seed_noise_widens_the_margin():
    assert _policy(held_out=450, seed_sd=2.0).noise(80, 80) > _policy(held_out=450).noise(80, 80)
    assert _policy().noise(80, 80) == 0.0  # nothing known about the noise: any lead counts
