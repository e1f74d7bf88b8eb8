"""Candidates: the budget is enforced before dispatch, networks are never trained twice."""

from __future__ import annotations

import optuna
import pytest

from evaluators.flops import count
from search.candidates import CandidateSource, make_sampler
from space import create_architecture
from space.search_space import SearchSpace, default_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(sampler="nsga2", n=40):
    return optuna.create_study(directions=["maximize", "minimize"],
                               sampler=make_sampler(sampler, seed=3, n_trials=n))


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_no_candidate_above_budget_is_ever_dispatched(sampler):
    budget = 40_000_000
    study = _study(sampler)
    source = CandidateSource(space=default_space(), study=study, budget_flops=budget, seed=0)
    handed_out = []
    for i in range(25):
        cand = source.next()
        assert cand is not None
        assert count(cand.arch).flops == cand.flops <= budget
        handed_out.append(cand.number)
        source.complete(cand.number, top1=float(i))
    assert source.rejected > 0  # a 40M budget rejects most of the default space
    trials = study.get_trials(deepcopy=False)
    over = [t for t in trials if t.user_attrs["flops"] > budget]
    assert len(over) == source.rejected
    for t in over:  # told to the sampler as infeasible, never handed out
        assert t.number not in handed_out
        assert t.constraints["flops"] > 0 and t.values[0] == 0.0
    for t in trials:
        if t.number in handed_out:
            assert t.constraints["flops"] <= 0


def test_the_same_network_is_never_trained_twice():
    tiny = SearchSpace.from_dict({
        "width": [0.5], "stages": [{"out": [16], "depth": [1], "stride": 2, "k": [3, 5],
                                    "blocks": [{"exp": [32, 48], "se": [False], "s": [2],
                                                "d": [3]}]}]})
    assert tiny.size() == 4
    study = _study("random")
    source = CandidateSource(space=tiny, study=study, budget_flops=10**12, seed=0)
    seen = set()
    while (cand := source.next()) is not None:
        key = cand.arch.canonical()
        assert key not in seen
        seen.add(key)
        source.complete(cand.number, top1=50.0)
    assert len(seen) == 4
    assert source.duplicates > 0
    assert "exhausted" in source.exhausted_reason
    # every duplicate proposal was told the known result, none left running
    assert all(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def test_proposal_of_a_running_network_waits_for_its_result():
    arch = create_architecture("ghostnet_100")
    study = _study("random")
    source = CandidateSource(space=default_space(), study=study, budget_flops=10**12)
    source.reserve(arch)  # the reference is training
    trial = study.ask()
    study.enqueue_trial(default_space().encode(arch))
    assert source._consider(study.ask()) is None and source.duplicates == 1
    source.remember(arch, top1=77.0, flops=count(arch).flops)
    twin = study.get_trials(deepcopy=False)[-1]
    assert twin.state == optuna.trial.TrialState.COMPLETE and twin.values[0] == 77.0
    study.tell(trial, [1.0, 1.0])


def test_failed_candidate_is_told_as_failed():
    study = _study("random")
    source = CandidateSource(space=default_space(), study=study, budget_flops=10**12)
    cand = source.next()
    source.fail(cand.number, "non-finite loss (nan) at epoch 1, step 3")
    t = study.trials[cand.number]
    assert t.state == optuna.trial.TrialState.FAIL
    assert "nan" in t.user_attrs["ghostnas_error"]


def test_networks_in_flight_when_a_run_was_killed_are_proposed_again_first():
    space = default_space()
    study = _study("random")
    before = CandidateSource(space=space, study=study, budget_flops=300_000_000, seed=0)
    first, second = before.next(), before.next()  # dispatched, then the driver was killed
    study.enqueue_trial(space.encode(first.arch))
    assert before._consider(study.ask()) is None  # a parked duplicate of a running network
    cut_off = study.ask()  # asked, never considered (the kill came first)

    resumed = CandidateSource(space=space, study=study, budget_flops=300_000_000, seed=1)
    assert resumed.abandon_running("interrupted: the run was killed while it trained") == 2
    for t in (study.trials[first.number], study.trials[second.number],
              study.trials[cut_off.number]):
        assert t.state == optuna.trial.TrialState.FAIL
        assert t.user_attrs["ghostnas_note"].startswith("interrupted")
    again = [resumed.next(), resumed.next()]
    assert [c.arch for c in again] == [first.arch, second.arch]
    assert {c.number for c in again}.isdisjoint({first.number, second.number})
    assert resumed.duplicates == 0


def test_a_result_written_to_the_table_but_not_told_is_told_on_resume():
    """Killed after writing a trial's row, before telling the study: the resume tells the
    study the row's result; the network is neither failed nor proposed again."""
    space = default_space()
    study = _study("random")
    before = CandidateSource(space=space, study=study, budget_flops=300_000_000, seed=0)
    done, failed, running = before.next(), before.next(), before.next()

    resumed = CandidateSource(space=space, study=study, budget_flops=300_000_000, seed=1)
    recorded = {done.number: (77.0, done.flops, None), failed.number: (None, failed.flops, None)}
    assert resumed.abandon_running("interrupted", recorded) == 1  # only `running`
    told = study.trials[done.number]
    assert told.state == optuna.trial.TrialState.COMPLETE
    assert told.values == [77.0, float(done.flops)]
    assert told.constraints == {"flops": done.flops - 300e6}
    assert study.trials[failed.number].state == optuna.trial.TrialState.FAIL
    assert "ghostnas_note" not in told.user_attrs
    assert resumed.next().arch == running.arch


def test_a_ctrl_c_inside_a_study_write_is_raised_after_it():
    import os
    import signal

    from search.candidates import interrupts_deferred

    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C would
            done.append("the write finished")
    assert done == ["the write finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
