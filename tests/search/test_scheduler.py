"""The schedulers as the search builds them (``make_scheduler``): with ASHA, candidates compete
with candidates, at the same epoch; with Pareto ASHA (the default) on the run's objectives, the
references compare and always finish."""

from __future__ import annotations

import types

import pytest
from ray.tune.schedulers import TrialScheduler

from search.ray_adapters import ParetoASHA, ReferenceSafeASHA, make_scheduler, trained_curves
from search.settings import SCHEDULERS


def _trial(trial_id: str, kind: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(trial_id=trial_id, config={"kind": kind})


def _scheduler(epochs: int = 2, **resumed):
    return make_scheduler("asha", epochs=epochs, **resumed)


def test_every_scheduler_option_is_built():
    for name in SCHEDULERS:
        make_scheduler(name, epochs=5)
    assert isinstance(make_scheduler("asha", epochs=5), ReferenceSafeASHA)
    assert isinstance(make_scheduler("pareto-asha", epochs=5), ParetoASHA)
    assert make_scheduler("none", epochs=5) is None
    assert make_scheduler("asha", epochs=1) is None  # one epoch: nothing to stop a trial at
    assert make_scheduler("pareto-asha", epochs=1) is None
    with pytest.raises(ValueError, match="name: got 'bogus', expected one of pareto-asha, asha"):
        make_scheduler("bogus", epochs=5)


def _tune_trial(trial_id: str, kind: str, flops: float, latency_ms: float | None = None):
    return types.SimpleNamespace(trial_id=f"ray-{trial_id}", config={
        "trial_id": trial_id, "kind": kind, "flops": flops, "latency_ms": latency_ms})


def test_pareto_asha_keeps_a_cheap_network_and_stops_one_clearly_dominated():
    sched = make_scheduler("pareto-asha", epochs=3, held_out=450)
    refs = {"ref-ghostnet_050": (80.0, 42e6), "ref-ghostnet_100": (88.0, 141e6)}
    for tid, (top1, flops) in refs.items():
        ref = _tune_trial(tid, "reference", flops)
        # a reference is never stopped, however it scores
        assert sched.on_trial_result(None, ref, {"epoch": 1, "top1": top1}) \
            == TrialScheduler.CONTINUE
    cheap = _tune_trial("c0001", "candidate", 20e6)  # trails both, but is cheaper than both
    assert sched.on_trial_result(None, cheap, {"epoch": 1, "top1": 60.0}) \
        == TrialScheduler.CONTINUE
    worse = _tune_trial("c0002", "candidate", 60e6)  # more FLOPs than 0.5x, 30 points behind
    assert sched.on_trial_result(None, worse, {"epoch": 1, "top1": 50.0}) == TrialScheduler.STOP
    failed = _tune_trial("c0003", "candidate", 60e6)
    assert sched.on_trial_result(None, failed, {"epoch": 1, "top1": 0.0, "status": "failed"}) \
        == TrialScheduler.CONTINUE


def test_pareto_asha_files_a_resumed_runs_curves_references_included():
    rows = [{"trial_id": "ref-ghostnet_050", "kind": "reference", "status": "finished",
             "flops": 42_000_000, "latency_ms": None},
            {"trial_id": "c0001", "kind": "candidate", "status": "finished",
             "flops": 20_000_000, "latency_ms": None}]
    curves = [{"trial_id": "ref-ghostnet_050", "epoch": e, "top1": t}
              for e, t in ((1, 80.0), (2, 90.0), (3, 93.0))]
    curves += [{"trial_id": "c0001", "epoch": 1, "top1": 75.0}]
    resumed = make_scheduler("pareto-asha", epochs=3, rows=rows, curves=curves, held_out=450)
    assert set(resumed.policy.rungs[1]) == {"ref-ghostnet_050", "c0001"}
    assert resumed.policy.rungs[1]["ref-ghostnet_050"].comparator
    # after the resume, a network the 0.5x reference dominates beyond the noise is stopped
    late = _tune_trial("c0002", "candidate", 50e6)
    assert resumed.on_trial_result(None, late, {"epoch": 1, "top1": 55.0}) == TrialScheduler.STOP
    fresh = make_scheduler("pareto-asha", epochs=3, held_out=450)
    assert fresh.on_trial_result(None, late, {"epoch": 1, "top1": 55.0}) \
        == TrialScheduler.CONTINUE  # alone in an empty rung


@pytest.mark.parametrize(("epochs", "rung"), [(2, 1), (5, 3)])
def test_finished_references_do_not_set_the_bar_for_candidates(epochs, rung):
    """Ray's ASHA files a completed trial's final result in the highest rung it passed: with
    2 epochs the rung at epoch 1, with 5 (the CIFAR default) the rung at epoch 3. References
    train to the end and score above any candidate at that rung; were their final results
    filed there, every candidate reaching it would be stopped."""
    asha = _scheduler(epochs)
    for i, top1 in enumerate((22.7, 28.1, 25.2, 27.0, 24.4)):
        ref = _trial(f"r{i}", "reference")
        asha.on_trial_add(None, ref)
        for epoch in range(1, epochs + 1):
            result = {"epoch": epoch, "top1": top1 - epochs + epoch}
            assert asha.on_trial_result(None, ref, result) == TrialScheduler.CONTINUE
        asha.on_trial_complete(None, ref, {"epoch": epochs, "top1": top1})
    first = _trial("c0000", "candidate")
    asha.on_trial_add(None, first)
    for epoch in range(1, rung + 1):
        assert asha.on_trial_result(None, first, {"epoch": epoch, "top1": 15.0 + epoch}) \
            == TrialScheduler.CONTINUE


def test_candidates_are_still_stopped_among_themselves():
    asha = _scheduler(5)
    decisions = []
    for i, top1 in enumerate((30.0, 31.0, 29.0, 32.0, 10.0)):
        trial = _trial(f"c{i:04d}", "candidate")
        asha.on_trial_add(None, trial)
        decisions.append(asha.on_trial_result(None, trial, {"epoch": 1, "top1": top1}))
    assert decisions[-1] == TrialScheduler.STOP  # far below its peers at the same epoch


def test_a_failed_trial_does_not_lower_the_bar():
    """A failed trial reports top1 0.0 only because Tune checks that every result has the
    metric; were it filed in the rung, a weak candidate would pass the lowered bar."""
    asha = _scheduler(5)
    failed = _trial("c0000", "candidate")
    asha.on_trial_add(None, failed)
    failure = {"epoch": 1, "top1": 0.0, "status": "failed"}
    assert asha.on_trial_result(None, failed, failure) == TrialScheduler.CONTINUE
    asha.on_trial_complete(None, failed, failure)
    decisions = []
    for i, top1 in enumerate((80.1, 75.6)):
        trial = _trial(f"c{i + 1:04d}", "candidate")
        asha.on_trial_add(None, trial)
        decisions.append(asha.on_trial_result(None, trial, {"epoch": 1, "top1": top1}))
    # The bar for the second is its one trained peer (80.1), not a percentile of {0.0, 80.1}.
    assert decisions == [TrialScheduler.CONTINUE, TrialScheduler.STOP]


def test_candidates_from_before_a_resume_hold_the_bar_from_the_first_trial_after_it():
    def decision(asha) -> str:
        weak = _trial("c0009", "candidate")
        asha.on_trial_add(None, weak)
        return asha.on_trial_result(None, weak, {"epoch": 1, "top1": 60.0})

    assert decision(_scheduler(5)) == TrialScheduler.CONTINUE  # empty rungs: nothing to clear
    curves = {"c0000": {1: 80.0, 2: 84.0, 3: 86.0, 4: 87.0, 5: 88.0},
              "c0001": {1: 78.0},  # stopped by ASHA after its first epoch
              "c0002": {1: 82.0, 2: 85.0, 3: 87.5}}
    rows = [{"trial_id": t, "kind": "candidate"} for t in curves]
    resumed = _scheduler(5, rows=rows, curves=[{"trial_id": t, "epoch": e, "top1": top1}
                                               for t, curve in curves.items()
                                               for e, top1 in curve.items()])
    rungs = dict(resumed._brackets[0]._rungs)
    assert rungs[1] == {"c0000": 80.0, "c0001": 78.0, "c0002": 82.0}
    assert rungs[3] == {"c0000": 86.0, "c0002": 87.5}
    assert decision(resumed) == TrialScheduler.STOP


def test_the_curves_a_resume_files_are_the_candidates_epochs():
    rows = [{"trial_id": "c0000", "kind": "candidate", "status": "finished"},
            {"trial_id": "c0001", "kind": "candidate", "status": "early_stopped"},
            {"trial_id": "c0002", "kind": "candidate", "status": "failed"},
            {"trial_id": "ref-ghostnet_050", "kind": "reference", "status": "finished"}]
    curves = [{"trial_id": t, "epoch": e, "top1": 50.0 + e}
              for t in ("c0000", "c0001", "c0002", "ref-ghostnet_050", "c0003")
              for e in (1, 2)]
    # c0002 failed after its epochs in curves.csv: those were real scores, and in the rungs
    assert trained_curves(rows, curves) == {"c0000": {1: 51.0, 2: 52.0},
                                             "c0001": {1: 51.0, 2: 52.0},
                                             "c0002": {1: 51.0, 2: 52.0}}
